"""The DPF paper's ci grid: every method runs and reaches its target, DPF ends at the target exactly; the ci
profile end to end against its committed reference."""

from __future__ import annotations

import dataclasses
import pytest
import torch
from harness import stage
from harness.config.load import load
from harness.grid.expand import expand
from harness.stage import Context
from harness.paths import Paths
from tests.conftest import ROOT
from harness import report
from harness.tracking import RUN_ID_TAG, Tracker
from harness.grid.execute import execute
from harness.grid.options import Options


@pytest.mark.parametrize("method", ["dense", "snip", "one_shot", "incremental", "dsr", "sparse_momentum", "dpf"])
def test_every_dpf_method_runs_and_reaches_its_target_exactly(tmp_path, data_root, dpf_ci, method):
    spec = next(s for s in expand(dpf_ci) if s.method == method and s.seed == 0)
    spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, pretrain="2ep"),
                               eval=dataclasses.replace(spec.eval, train_examples=64, every="1ep"))
    if method == "one_shot":
        spec = dataclasses.replace(spec, params=dataclasses.replace(spec.params, finetune="1ep"))
    rows = stage.run_spec(spec, Context(paths=Paths(tmp_path), data_root=data_root, device="cpu"))
    final = rows[-1]
    assert final["axis"] == "final" and 0 <= final["test_acc"] <= 1
    masks = torch.load(Paths(tmp_path).run_dir("dpf", spec.id) / "masks_final.pt")
    n = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    if method == "dense":
        assert kept == n and final["density"] == 1.0
    elif method == "incremental" or method == "dpf":
        pass  # the cubic target is reached at end = 5ep; 2 epochs here: checked in the full-length test below
    elif method == "dsr":  # int(0.1 n_l + 0.1) per layer at the start, then the growth loop's rounding
        assert abs(kept - round(0.1 * n)) <= 2 * len(masks) and final["density"] == kept / n
    elif method == "sparse_momentum":  # Bernoulli(0.1) per entry at the start, then drifts toward 0.1 n
        assert abs(kept - round(0.1 * n)) <= 4 * (0.09 * n) ** 0.5 + len(masks) and final["density"] == kept / n
    else:
        assert kept == round(0.1 * n) and final["density"] == kept / n
    assert set(masks) == {k for k in masks if k.endswith(".weight")}  # conv weights only: no BN, no bias, no Linear
    assert not any(k.startswith("fc") or "linear" in k for k in masks)


def test_dpf_ci_run_ends_at_the_target_density_exactly(tmp_path, data_root, dpf_ci):
    spec = next(s for s in expand(dpf_ci) if s.method == "dpf" and s.seed == 1)
    full = stage.run_spec(spec, Context(paths=Paths(tmp_path / "a"), data_root=data_root, device="cpu"))
    masks = torch.load(Paths(tmp_path / "a").run_dir("dpf", spec.id) / "masks_final.pt")
    n = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(0.1 * n)  # the last update before the freeze
    assert full[-1]["density"] == round(0.1 * n) / n
    assert full[-1]["reactivated_total"] > 0 and [r["index"] for r in full] == [1, 2, 3, 4, 5, 6, 0]


REFERENCE = ROOT / "reports" / "dpf" / "ci"


ACC_TOL = 5.0  # accuracy points (the same machine reproduces the reference exactly)


@pytest.mark.e2e
def test_dpf_ci_profile_end_to_end(tmp_path, data_root):
    m = load(ROOT / "paper_configs" / "dpf.yaml", "ci")
    specs = expand(m)
    assert sorted({s.method for s in specs}) == sorted(["dense", "snip", "one_shot", "incremental", "dsr",
                                                        "sparse_momentum", "dpf", "dpf_structured"])
    paths = Paths(tmp_path)
    out = execute(m, specs, Options(paths=paths, data_root=data_root, executor="local"),
                           log=lambda *_: None)
    assert (out.failed, out.diverged, out.ran, out.dense_trained) == ([], [], 16, 2)

    tracker = Tracker(paths.tracking_uri)
    exp = tracker.client.get_experiment_by_name("dpf")
    runs = [r for r in tracker.client.search_runs([exp.experiment_id], max_results=1000) if RUN_ID_TAG in r.data.tags]
    assert len(runs) == 18 and {r.info.status for r in runs} == {"FINISHED"}
    by_method = {r.data.tags.get("method"): r for r in runs if r.data.tags["stage"] == "prune"}
    dpf = by_method["dpf"]
    assert dpf.data.tags["prunebench.axis"] == "epoch"
    for key in ("test_acc", "density", "reactivated", "epoch"):  # one point per epoch, x-axis = epoch
        assert [h.step for h in tracker.client.get_metric_history(dpf.info.run_id, key)] == [1, 2, 3, 4, 5, 6]
    assert dpf.data.metrics["final/reactivated_total"] > 0  # the feedback path brought weights back
    assert dpf.data.metrics["final/best_test_acc"] >= dpf.data.metrics["final/test_acc"]
    assert "final/reactivated_total" not in by_method["incremental"].data.metrics

    out_dir = tmp_path / "report"
    summary = report.build(m, specs, report.collect(specs, tracker), out_dir)
    assert summary.n_missing_runs == 0
    text = (out_dir / "README.md").read_text()
    assert "| model | target | sparsity | sparsity (all) | n | dense |" in text
    problems = report.compare(REFERENCE / "results.csv", out_dir / "results.csv", acc_tol=ACC_TOL)
    assert problems == [], "\n".join(problems)
