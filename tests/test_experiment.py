"""One RunSpec end to end without Ray: resume, idempotence, shared dense models, rewinding."""

from __future__ import annotations

import csv
import dataclasses

import pytest
import torch

from harness import experiment
from harness.experiment import Context, Interrupted
from harness.paths import Paths, read_jsonl
from harness.pruning.methods import iterative, stage

TRAINING_MODULES = (experiment, iterative, stage)  # where train() is called from


@pytest.fixture
def count_training(monkeypatch):
    calls = []
    real = experiment.train

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
    full = experiment.run(spec, _ctx(tmp_path / "a", data_root))
    assert [(r["axis"], r["index"]) for r in full] == [("round", 0), ("round", 1), ("round", 2), ("round", 3), ("final", 0)]
    assert full[-1]["test_acc"] == full[-2]["test_acc"] and full[-1]["density"] == full[-2]["density"]

    with pytest.raises(Interrupted):
        experiment.run(spec, _ctx(tmp_path / "b", data_root, stop_after=("round", 1)))
    count_training.clear()
    replayed: list[dict] = []
    resumed = experiment.run(spec, _ctx(tmp_path / "b", data_root, rows=replayed))
    assert count_training == [5, 5]  # only rounds 2 and 3 trained again; dense model cached
    assert [r["index"] for r in replayed] == [0, 1, 2, 3, 0]
    assert resumed == full  # every metric of every round, bit for bit
    a = torch.load(Paths(tmp_path / "a").run_dir("lamp", spec.id) / "checkpoint.pt")
    b = torch.load(Paths(tmp_path / "b").run_dir("lamp", spec.id) / "checkpoint.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["masks"][k], b["masks"][k]) for k in a["masks"])


def test_finished_run_is_not_redone(tmp_path, data_root, tiny_specs, count_training):
    spec = tiny_specs["erk", 1]
    first = experiment.run(spec, _ctx(tmp_path, data_root))
    count_training.clear()
    again = experiment.run(spec, _ctx(tmp_path, data_root))
    assert count_training == [] and again == first


def test_methods_share_one_dense_model_and_record_layer_densities(tmp_path, data_root, tiny_specs, count_training):
    rows = {m: experiment.run(tiny_specs[m, 0], _ctx(tmp_path, data_root)) for m in ("global", "uniform")}
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
    experiment.run(spec, _ctx(tmp_path, data_root))
    paths = Paths(tmp_path)
    init = torch.load(paths.dense_dir(spec.dense.id) / "init.pt")
    final = torch.load(paths.dense_dir(spec.dense.id) / "final.pt")
    ck = torch.load(paths.run_dir("lamp", spec.id) / "checkpoint.pt")
    assert ck["round"] == 2
    for name, w in ck["model"].items():
        expected = init[name] * ck["masks"][name] if name in ck["masks"] else init[name]
        assert torch.equal(w, expected), name
    # the masks themselves came from the trained weights, not from the initialisation
    assert not all(torch.equal(init[n], final[n]) for n in ck["masks"])


def test_fresh_optimizer_each_round(tmp_path, data_root, tiny_specs, monkeypatch):
    made = []
    real = iterative.make_optimizer

    def spy(cfg, params):
        opt = real(cfg, params)
        made.append(opt)
        return opt

    for module in TRAINING_MODULES:
        monkeypatch.setattr(module, "make_optimizer", spy)
    experiment.run(tiny_specs["uniform_plus", 0], _ctx(tmp_path, data_root))
    assert len(made) == 1 + 3 and len({id(o) for o in made}) == 4  # dense + one per round


def test_rewind_snapshot_equals_training_to_that_step(tmp_path, data_root, tiny_specs):
    """rewind_step k > 0: the dense stage saves its weights after step k, bit-identical to a
    pre-training that stops at k (same seed, same data order)."""
    dense = dataclasses.replace(tiny_specs["lamp", 0].dense, steps="10it", snapshot_step=5)
    short = dataclasses.replace(dense, steps="5it", snapshot_step=None)
    ctx = _ctx(tmp_path, data_root)
    experiment.train_dense(dense, ctx)
    experiment.train_dense(short, ctx)
    paths = Paths(tmp_path)
    snap = torch.load(paths.dense_dir(dense.id) / "snapshot.pt")
    five = torch.load(paths.dense_dir(short.id) / "final.pt")
    ten = torch.load(paths.dense_dir(dense.id) / "final.pt")
    assert all(torch.equal(snap[k], five[k]) for k in snap)
    assert not all(torch.equal(snap[k], ten[k]) for k in snap)
