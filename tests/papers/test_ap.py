"""The AP paper's manifest (paper_configs/ap.yaml) encodes its sheet, and its ci profile runs end to end."""

from __future__ import annotations

import dataclasses
import pytest
from harness.config.load import load
from harness.grid.expand import expand
from harness.config.schema import LRScheduleConfig
from harness import report
from harness.tracking import RUN_ID_TAG, Tracker
from tests.conftest import ROOT


FULL = LRScheduleConfig("warmup_fixed", warmup_per_iter=5.0e-6, warmup_iters=20000, fixed=((25, 0.01), (32, 0.001)))


def test_full_manifest_encodes_the_sheet():
    every = expand(load(ROOT / "paper_configs" / "ap.yaml"))
    specs = [x for x in every if x.experiment == "cifar10_resnet20"]
    assert len(specs) == 8 * 10 and {s.seed for s in specs} == set(range(10))
    # the other networks (pairings assumed): CIFAR-100 with the script's recipe, ImageNet with an assumed one
    c100 = [x for x in every if x.experiment == "cifar100_networks"]
    assert len(c100) == 3 * 8 * 3 and {x.model.arch for x in c100} == {"vgg19_bn_tv_4096fc", "densenet121_tv",
                                                                        "mobilenet_v2_tv"}
    assert {x.num_classes for x in c100} == {100} and all(x.training == specs[0].training for x in c100)
    inet = [x for x in every if x.experiment == "imagenet_networks"]
    assert len(inet) == 2 * 6 * 3 and {x.dataset.source for x in inet} == {"imagenet"}
    assert {x.params.cycles for x in inet} == {10} and not any(x.method.startswith("dpf") for x in inet)
    assert {x.training.lr_schedule.name for x in inet} == {"multistep"} and inet[0].training.batch_size == 256
    s = next(x for x in specs if x.method == "global_mag_ap")
    t = s.training
    assert s.params.cycles == 24 and s.prunable == "all_weights" and s.model.arch == "resnet20_cifar_optb"
    assert s.dataset.std == (0.2023, 0.1994, 0.2010) and s.dataset.pad_mode == "zeros" and s.dataset.hflip
    assert (t.batch_size, t.drop_last, t.pretrain, t.retrain) == (64, False, "50ep", "50ep")
    assert (t.optimizer.name, t.optimizer.momentum, t.optimizer.weight_decay) == ("sgd", 0.9, 1e-4)  # the paper's
    assert s.model.init is None  # He initialisation: the builder's (ap.md 1.1)
    assert t.lr_schedule == FULL
    # the released script's recipe as its own profile: Xavier-style re-init, weight decay 5e-4, all else the same
    script = next(x for x in expand(load(ROOT / "paper_configs" / "ap.yaml", "released_script")) if x.method == "global_mag_ap" and x.seed == s.seed)
    assert script.model.init == "ap_xavier" and script.training.optimizer.weight_decay == 5e-4
    assert dataclasses.replace(script.training, optimizer=t.optimizer) == t and script.params == s.params
    assert {x.method: x.params.mode for x in specs} == {"global_mag": "reinit", "global_mag_ap": "reinit", "lth": "lt",
                                                        "lth_ap": "lt", "lamp_cyc": "reinit", "lamp_cyc_ap": "reinit",
                                                        "dpf_cyc": "reinit", "dpf_cyc_ap": "reinit"}
    dpf = next(x for x in specs if x.method == "dpf_cyc_ap").params
    assert (dpf.decision, dpf.dpf_update_every, dpf.dpf_end, dpf.base_rate, dpf.ap_rate) == ("dpf", 16, "32ep", 0.18, 0.02)
    assert {x.params.decision for x in specs if not x.method.startswith("dpf")} == {"masked"}


REFERENCE = ROOT / "reports" / "ap" / "ci"


ACC_TOL = 5.0


@pytest.mark.e2e
def test_ap_ci_profile_end_to_end(ci_grid, tmp_path):
    m, specs, paths, out = ci_grid("ap")
    assert (out.failed, out.diverged, out.ran) == ([], [], len(specs))
    tracker = Tracker(paths.tracking_uri)
    ids = {s.id for s in specs}
    runs = [r for r in tracker.client.search_runs([tracker.client.get_experiment_by_name("ap").experiment_id])
            if r.data.tags.get("stage") == "prune" and r.data.tags[RUN_ID_TAG] in ids]
    assert len(runs) == len(specs) and {r.info.status for r in runs} == {"FINISHED"}
    for r in runs:
        assert 0 <= r.data.metrics["final/dead_neuron_rate"] <= 1
        steps = [h.step for h in tracker.client.get_metric_history(r.info.run_id, "round")]
        assert steps == [0, 1, 2]  # the dense model, then two pruning cycles
        retrain = [h.step for h in tracker.client.get_metric_history(r.info.run_id, "retrain/dead_neuron_rate")]
        assert sorted(retrain) == list(range(1, 9))  # every epoch of both recorded retrainings, once
    out_dir = tmp_path / "report"
    report.build(m, specs, report.collect(specs, tracker), out_dir)
    problems = report.compare(REFERENCE / "results.csv", out_dir / "results.csv", acc_tol=ACC_TOL)
    assert problems == [], "\n".join(problems)
