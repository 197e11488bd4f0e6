"""``eval.snapshots``: a single-stage run's mask and accuracy every N steps as ``snapshot`` rows (the
PAGS paper's sampled subnetworks): where they land, that they change nothing the run trains, that a
resumed run takes each one once, and their way through MLflow."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from harness import experiment
from harness.config import expand, load
from harness.experiment import Context
from harness.paths import Paths
from harness.grid.describe import run_tags
from harness.tracking import Tracker

from .conftest import ROOT


def _spec(snapshots: str | None, method: str = "dpf"):
    m = load(ROOT / "paper_configs" / "dpf.yaml", "ci")
    spec = next(s for s in expand(m) if s.method == method and s.seed == 0)
    return dataclasses.replace(spec, training=dataclasses.replace(spec.training, pretrain="2ep"),
                               eval=dataclasses.replace(spec.eval, train_examples=64, test_examples=100,
                                                        snapshots=snapshots))


def _same(a: list[dict], b: list[dict]) -> bool:
    """Rows equal, NaN included (a layer-less graph mean is NaN on both sides)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_snapshots_land_every_n_steps_and_change_nothing_the_run_trains(tmp_path, data_root):
    plain, snap = _spec(None), _spec("10it")
    assert plain.id != snap.id  # an evaluation setting of the run (never of a dense model)
    a = experiment.run(plain, Context(paths=Paths(tmp_path / "a"), data_root=data_root, device="cpu"))
    b = experiment.run(snap, Context(paths=Paths(tmp_path / "b"), data_root=data_root, device="cpu"))
    shots = [r for r in b if r["axis"] == "snapshot"]
    assert [r["index"] for r in shots] == [10, 20, 30]  # 16 steps per epoch, 32 steps: not at 0, not at 32 + 8
    assert snap.proc.planned_rows(snap) == [("epoch", 1), ("epoch", 2), ("snapshot", 10), ("snapshot", 20),
                                            ("snapshot", 30), ("final", 0)]
    for r in shots:
        assert {"graph_D", "test_acc", "density"} <= set(r) and 0 < r["density"] < 1
    # the cubic schedule is still pruning at step 10 (density above the target) and the mask moves
    assert shots[0]["density"] > shots[-1]["density"]
    # the snapshots read the model in eval mode and draw no training randomness: same epochs, same final mask
    strip = lambda rows: [r for r in rows if r["axis"] == "epoch"]  # noqa: E731
    assert strip(a) == strip(b)
    fa = torch.load(Paths(tmp_path / "a").run_dir("dpf", plain.id) / "masks_final.pt")
    fb = torch.load(Paths(tmp_path / "b").run_dir("dpf", snap.id) / "masks_final.pt")
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    final_a, final_b = a[-1], b[-1]
    assert final_b["test_acc"] == final_a["test_acc"] and final_b["best_epoch"] == final_a["best_epoch"]


def test_a_resumed_run_takes_each_snapshot_once(tmp_path, data_root):
    spec = _spec("10it", method="snip")
    full = experiment.run(spec, Context(paths=Paths(tmp_path / "a"), data_root=data_root, device="cpu"))
    with pytest.raises(experiment.Interrupted):
        experiment.run(spec, Context(paths=Paths(tmp_path / "b"), data_root=data_root, device="cpu",
                                     stop_after=("epoch", 1)))
    seen = []
    resumed = experiment.run(spec, Context(paths=Paths(tmp_path / "b"), data_root=data_root, device="cpu",
                                           report=seen.append))
    assert _same(resumed, full)
    assert [r["index"] for r in resumed if r["axis"] == "snapshot"] == [10, 20, 30]


def test_snapshot_rows_through_mlflow_on_their_own_axis(tmp_path):
    manifest = load(ROOT / "paper_configs" / "dpf.yaml", "ci")
    spec = next(s for s in expand(manifest) if s.method == "dpf")
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    mid = tracker.open("dpf", spec, run_tags(spec, manifest), "a run")
    tracker.log_row(mid, {"axis": "epoch", "index": 1, "test_acc": 0.5, "density": 0.5})
    tracker.log_row(mid, {"axis": "snapshot", "index": 10, "test_acc": 0.4, "graph_D": 3.0, "density": 0.6})
    tracker.log_row(mid, {"axis": "snapshot", "index": 20, "test_acc": 0.45, "graph_D": 3.5, "density": 0.5})
    tracker.log_row(mid, {"axis": "snapshot", "index": 20, "test_acc": 0.0, "graph_D": 0.0, "density": 0.0})  # replay
    fresh = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")  # reads what is logged back
    fresh.log_row(mid, {"axis": "snapshot", "index": 10, "test_acc": 0.0, "graph_D": 0.0, "density": 0.0})
    rows = fresh.rows(mid)
    assert sorted(rows) == ["epoch", "snapshot"]
    assert rows["snapshot"] == {10: {"test_acc": 0.4, "graph_D": 3.0, "density": 0.6},
                                20: {"test_acc": 0.45, "graph_D": 3.5, "density": 0.5}}
    assert rows["epoch"] == {1: {"test_acc": 0.5, "density": 0.5}}
