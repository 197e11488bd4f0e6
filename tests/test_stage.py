"""harness/stage.py: one RunSpec end to end without Ray: resume, idempotence, shared dense models, rewinding,
snapshot rows (eval.snapshots) and the best-epoch selections."""

from __future__ import annotations

import csv
import dataclasses
import pytest
import torch
from harness import stage
from harness.stage import Context, Interrupted
from harness.paths import Paths, read_jsonl
from harness.pruning.methods import dense_spec
import json
from harness.config.load import load
from harness.grid.expand import expand
from harness.grid.describe import run_tags
from harness.tracking import Tracker
from harness.pruning.methods import procedure
from tests.conftest import ROOT
from harness.stage import best_of


TRAINING_MODULES = (stage,)  # where train() and make_optimizer() are called from


@pytest.fixture
def count_training(monkeypatch):
    calls = []
    real = stage.train

    def counted(*a, **k):
        calls.append(k["steps"])
        return real(*a, **k)

    for module in TRAINING_MODULES:
        monkeypatch.setattr(module, "train", counted)
    return calls


def _ctx(tmp_path, data_root, rows=None, **kw):
    return Context(paths=Paths(tmp_path), data_root=data_root, device="cpu",
                   report=(rows.append if rows is not None else (lambda r: None)), **kw)


@pytest.mark.parametrize("fresh_optimizer", [True, False])
def test_resumed_run_equals_uninterrupted_run(tmp_path, data_root, tiny_specs, count_training, fresh_optimizer):
    spec = tiny_specs["lamp", 0]
    spec = dataclasses.replace(spec, params=dataclasses.replace(spec.params, fresh_optimizer_each_round=fresh_optimizer))
    full = stage.run_spec(spec, _ctx(tmp_path / "a", data_root))
    assert [(r["axis"], r["index"]) for r in full] == [("round", 0), ("round", 1), ("round", 2), ("round", 3), ("final", 0)]
    assert full[-1]["test_acc"] == full[-2]["test_acc"] and full[-1]["density"] == full[-2]["density"]

    with pytest.raises(Interrupted):
        stage.run_spec(spec, _ctx(tmp_path / "b", data_root, stop_after=("round", 1)))
    count_training.clear()
    replayed: list[dict] = []
    resumed = stage.run_spec(spec, _ctx(tmp_path / "b", data_root, rows=replayed))
    assert count_training == [5, 5]  # only rounds 2 and 3 trained again; dense model cached
    assert [r["index"] for r in replayed] == [0, 1, 2, 3, 0]
    assert resumed == full  # every metric of every round, bit for bit
    for name in ("final.pt", "masks_final.pt"):
        a = torch.load(Paths(tmp_path / "a").run_dir("lamp", spec.id) / name)
        b = torch.load(Paths(tmp_path / "b").run_dir("lamp", spec.id) / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (Paths(tmp_path / "b").run_dir("lamp", spec.id) / "checkpoint.pt").exists()  # only while it runs


def test_finished_run_is_not_redone(tmp_path, data_root, tiny_specs, count_training):
    spec = tiny_specs["erk", 1]
    first = stage.run_spec(spec, _ctx(tmp_path, data_root))
    count_training.clear()
    again = stage.run_spec(spec, _ctx(tmp_path, data_root))
    assert count_training == [] and again == first


def test_methods_share_one_dense_model_and_record_layer_densities(tmp_path, data_root, tiny_specs, count_training):
    rows = {m: stage.run_spec(tiny_specs[m, 0], _ctx(tmp_path, data_root)) for m in ("global", "uniform")}
    assert count_training == [20, 5, 5, 5, 5, 5, 5]  # one pre-training, then 3 rounds per method
    assert len(list((tmp_path / "runs" / "dense").iterdir())) == 1
    assert rows["global"][0]["test_acc"] == rows["uniform"][0]["test_acc"]
    for m, rs in rows.items():
        assert [round(r["density"], 3) for r in rs] == [1.0, 0.8, 0.64, 0.512, 0.512]
        d = Paths(tmp_path).run_dir("lamp", tiny_specs[m, 0].id)
        table = list(csv.reader((d / "layer_density.csv").open()))
        assert table[0][:3] == ["axis", "index", "density"] and len(table[0]) == 3 + 14
        assert [r[1] for r in table[1:]] == ["0", "1", "2", "3"]
        assert (d / "DONE").exists() and (d / "masks_final.pt").exists()
        assert len(read_jsonl(d / "rows.jsonl")) == 5
    # uniform prunes every layer by the same fraction; global does not
    uni = rows["uniform"][-1]["layer_density"].values()
    glob = rows["global"][-1]["layer_density"].values()
    assert max(uni) - min(uni) < 0.01 < max(glob) - min(glob)


def test_rewound_weights_equal_init_times_mask(tmp_path, data_root, tiny_specs):
    spec = dataclasses.replace(tiny_specs["lamp", 0], experiment="rewind_test")
    spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, retrain="0it"),
                               params=dataclasses.replace(spec.params, rounds=2, rewind_step=0))
    stage.run_spec(spec, _ctx(tmp_path, data_root))
    paths = Paths(tmp_path)
    init = torch.load(paths.dense_dir(dense_spec(spec).id) / "init.pt")
    final = torch.load(paths.dense_dir(dense_spec(spec).id) / "final.pt")
    model = torch.load(paths.run_dir("lamp", spec.id) / "final.pt")
    masks = torch.load(paths.run_dir("lamp", spec.id) / "masks_final.pt")
    for name, w in model.items():
        expected = init[name] * masks[name] if name in masks else init[name]
        assert torch.equal(w, expected), name
    # the masks themselves came from the trained weights, not from the initialisation
    assert not all(torch.equal(init[n], final[n]) for n in masks)


def test_fresh_optimizer_each_round(tmp_path, data_root, tiny_specs, monkeypatch):
    made = []
    real = stage.make_optimizer

    def spy(cfg, params):
        opt = real(cfg, params)
        made.append(opt)
        return opt

    for module in TRAINING_MODULES:
        monkeypatch.setattr(module, "make_optimizer", spy)
    stage.run_spec(tiny_specs["uniform_plus", 0], _ctx(tmp_path, data_root))
    assert len(made) == 1 + 3 and len({id(o) for o in made}) == 4  # dense + one per round


def test_rewind_snapshot_equals_training_to_that_step(tmp_path, data_root, tiny_specs):
    """rewind_step k > 0: the dense stage saves its weights after step k, bit-identical to a
    pre-training that stops at k (same seed, same data order)."""
    dense = dataclasses.replace(dense_spec(tiny_specs["lamp", 0]), steps="10it", snapshot_step=5)
    short = dataclasses.replace(dense, steps="5it", snapshot_step=None)
    ctx = _ctx(tmp_path, data_root)
    stage.train_dense(dense, ctx)
    stage.train_dense(short, ctx)
    paths = Paths(tmp_path)
    snap = torch.load(paths.dense_dir(dense.id) / "snapshot.pt")
    five = torch.load(paths.dense_dir(short.id) / "final.pt")
    ten = torch.load(paths.dense_dir(dense.id) / "final.pt")
    assert all(torch.equal(snap[k], five[k]) for k in snap)
    assert not all(torch.equal(snap[k], ten[k]) for k in snap)


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
    a = stage.run_spec(plain, Context(paths=Paths(tmp_path / "a"), data_root=data_root, device="cpu"))
    b = stage.run_spec(snap, Context(paths=Paths(tmp_path / "b"), data_root=data_root, device="cpu"))
    shots = [r for r in b if r["axis"] == "snapshot"]
    assert [r["index"] for r in shots] == [10, 20, 30]  # 16 steps per epoch, 32 steps: not at 0, not at 32 + 8
    assert procedure(snap).planned_rows(snap) == [("epoch", 1), ("epoch", 2), ("snapshot", 10), ("snapshot", 20),
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
    full = stage.run_spec(spec, Context(paths=Paths(tmp_path / "a"), data_root=data_root, device="cpu"))
    with pytest.raises(stage.Interrupted):
        stage.run_spec(spec, Context(paths=Paths(tmp_path / "b"), data_root=data_root, device="cpu",
                                     stop_after=("epoch", 1)))
    seen = []
    resumed = stage.run_spec(spec, Context(paths=Paths(tmp_path / "b"), data_root=data_root, device="cpu",
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


def test_best_validation_selection_takes_the_first_of_ties():
    rows = [{"axis": "epoch", "index": e, "test_acc": t, "val_acc": v}
            for e, (t, v) in enumerate([(0.5, 0.6), (0.7, 0.8), (0.9, 0.8), (0.6, 0.7)], start=1)]
    out = best_of(rows + [{"axis": "final", "index": 0, "test_acc": 0.6}])
    assert out == {"best_test_acc": 0.9, "best_epoch": 3, "test_acc_at_best_val": 0.7, "best_val_acc": 0.8,
                   "best_val_epoch": 2}
