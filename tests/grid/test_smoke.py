"""``prunebench run --smoke`` (harness/grid/smoke.py, train(smoke=True), Stage.units' smoke spans).

- a smoke training runs steps first, first + 1, T - 2 and T - 1, each at the LR the full run has at that step;
- a smoke run of an iterative procedure runs rounds 1, 2 and the last, and its last round prunes to the real final
  density (it compounds the skipped rounds);
- a failing cell is named with a one-line error and the other cells still run;
- the four manifests' full profiles: a covering set of cells (every dataset source read from synthetic files in its
  real on-disk format, every procedure of every paper) runs at full model size with nothing written to MLflow
  (``make smoke`` / ``--smoke`` runs every cell; the ``ci`` end-to-end tests run every method).
"""

from __future__ import annotations

import dataclasses
import pytest
import torch

from harness.config.load import load
from harness.grid import smoke
from harness.grid.describe import run_name
from harness.grid.expand import expand
from harness.paths import Paths
from harness.stage import finished, folder, read_jsonl
from harness.train import StepHooks, train

from tests.conftest import ROOT
from tests.tiny import images, resnet20

PAPERS = ("lamp", "dpf", "ap", "pags")


class LRs(StepHooks):
    def __init__(self, optimizer):
        self.optimizer, self.seen = optimizer, []

    def before_forward(self, step: int) -> None:
        self.seen.append((step, self.optimizer.param_groups[0]["lr"]))


def _lrs(smoke_run: bool, steps: int = 20) -> list[tuple[int, float]]:
    model = resnet20()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[5, 18], gamma=0.1)
    hook = LRs(opt)
    train(model, images(64), steps=steps, optimizer=opt, scheduler=sched, batch_size=8, drop_last=True, seed=0,
          hooks=hook, smoke=smoke_run)
    return hook.seen


def test_smoke_training_runs_the_first_two_and_last_two_steps_at_their_real_lr():
    full = dict(_lrs(False))
    seen = _lrs(True)
    assert [s for s, _ in seen] == [0, 1, 18, 19]
    assert all(lr == pytest.approx(full[s], rel=1e-12) for s, lr in seen)
    assert seen[-1][1] == pytest.approx(0.001)  # after both milestones: the schedule's jump is not skipped


@pytest.fixture(scope="module")
def lamp_ci():
    return load(ROOT / "paper_configs" / "lamp.yaml", "ci")


def test_smoke_iterative_run_ends_at_the_real_final_density(lamp_ci, tmp_path):
    spec = next(s for s in expand(lamp_ci) if s.method == "global" and s.seed == 0)
    rounds = 6
    spec = dataclasses.replace(spec, params=dataclasses.replace(spec.params, rounds=rounds))
    [result] = smoke.run([spec], workdir=tmp_path, log=lambda line: None)
    assert result.error is None, result.error
    rows = read_jsonl(folder(Paths(tmp_path / "work"), smoke.smoke_spec(spec)).rows)
    assert [r["index"] for r in rows if r["axis"] == "round"] == [0, 1, 2, rounds]
    # the last round compounds rounds 3..6: 0.8^6 of the weights remain, as in the full run (count rounding aside)
    assert rows[-1]["density"] == pytest.approx(0.8 ** rounds, abs=2e-4)
    assert [r for r in rows if r["axis"] == "round"][2]["density"] == pytest.approx(0.64, abs=2e-4)
    assert not list(tmp_path.rglob("mlflow.db"))  # nothing to the tracking store


def test_a_failing_cell_is_named_and_the_others_run(lamp_ci, tmp_path, monkeypatch):
    specs = smoke.cells(expand(lamp_ci))[:3]
    calls = []

    def fake(spec, ctx):
        calls.append(spec.id)
        assert ctx.smoke and ctx.data_root == tmp_path / "data"
        if len(calls) == 2:
            raise RuntimeError("shape mismatch in layer4\nsecond line not shown")

    monkeypatch.setattr(smoke, "run_spec", fake)
    lines = []
    results = smoke.run(specs, workdir=tmp_path, log=lines.append)
    assert len(calls) == 3 and [r.error for r in results] == [None, "RuntimeError: shape mismatch in layer4", None]
    assert lines[1].startswith(f"[2/3] {run_name(specs[1])}: FAILED: RuntimeError: shape mismatch in layer4")
    assert (tmp_path / "data" / "FashionMNIST" / "raw").is_dir()  # synthetic files in the reader's layout


def test_cells_take_the_first_seed_and_the_highest_sparsity():
    m = load(ROOT / "paper_configs" / "dpf.yaml")
    chosen = smoke.cells(expand(m))
    sweep = [s for s in chosen if s.experiment == "wrn28_2_sweep" and s.method == "dpf"]
    assert len(sweep) == 1 and sweep[0].seed == 0 and sweep[0].target_sparsity == 0.99
    assert len({(s.experiment, s.model_key, s.dataset_key, s.method) for s in chosen}) == len(chosen)


@pytest.mark.e2e
def test_full_profiles_covering_cells_run(tmp_path):
    specs = [s for paper in PAPERS for s in expand(load(ROOT / "paper_configs" / f"{paper}.yaml"))]
    chosen = smoke.covering(specs)
    assert {s.dataset.source for s in chosen} == {s.dataset.source for s in specs}  # every reader, real formats
    assert {(s.paper, s.procedure) for s in chosen} == {(s.paper, s.procedure) for s in specs}
    lines = []
    results = smoke.run(chosen, workdir=tmp_path, log=lines.append)
    failed = [f"{r.name}: {r.error}" for r in results if r.error]
    assert not failed, failed
    assert len(lines) == len(chosen) and all(": ok (" in line for line in lines)
    assert not list(tmp_path.rglob("mlflow.db")) and not list(tmp_path.rglob("mlruns"))  # nothing to MLflow
    assert all(finished(Paths(tmp_path / "work"), smoke.smoke_spec(s)) for s in chosen)  # every stage to its end
