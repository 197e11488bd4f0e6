"""The contract every procedure keeps (harness/pruning/methods/*, run by harness/stage.py), checked on one tiny cell
of each registered procedure from the papers' ci grids:

* the rows it reports are the rows it plans (``planned_rows``: what the report and the grid expect);
* killed right after its first checkpoint and run again, it ends exactly as an uninterrupted run (rows, weights);
* its final density is on target;
* the model it ends with (``final.pt``) is the sparse one it reports: every masked weight exactly 0, and evaluating
  it gives the final row's accuracy (a procedure that left its dense weights, or evaluated other weights, fails);
* every value of every row reaches MLflow under its axis.

A new procedure must add its case here (the first test fails until it does)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from harness import evaluate
from harness import stage as stage_module
from harness.config.load import load
from harness.grid.describe import run_tags
from harness.grid.expand import expand
from harness.models.build import build_model
from harness.paths import Paths
from harness.pruning.methods import PROCEDURES, procedure
from harness.pruning.schedules import Cubic
from harness.stage import Context, Interrupted, folder, load_data, run_spec
from harness.tracking import Tracker
from harness.train import HookChain, StepHooks
from harness.units import duration_steps

from tests.conftest import ROOT

# procedure -> (paper, method of its ci grid, parameter overrides that make it tiny)
CASES = {
    "iterative": ("lamp", "lamp", {"rounds": 2}),
    "one_shot": ("dpf", "one_shot", {"finetune": "1ep"}),
    "gradual": ("dpf", "dpf", {"end": "1ep", "update_every": 2}),
    "at_init": ("pags", "snip_pags", {"candidates": 2}),
    "dense": ("dpf", "dense", {}),
    "dynamic": ("dpf", "dsr", {"update_every": "2it"}),
    "cycles": ("ap", "global_mag_ap", {"cycles": 2}),
}


def _tiny(spec):
    """64 training images at batch 16 (4 steps an epoch), 2 epochs of training (1 per round), 32 evaluated."""
    ds = dataclasses.replace(spec.dataset, train_subset=64, test_subset=32, validation=0)
    t = dataclasses.replace(spec.training, batch_size=16, drop_last=True, pretrain="2ep", retrain="1ep")
    ev = dataclasses.replace(spec.eval, batch_size=32, train_examples=32, test_examples=32, every="1ep", epochs=(),
                             snapshots=None)
    return dataclasses.replace(spec, dataset=ds, training=t, eval=ev)


@pytest.fixture(scope="module")
def specs():
    out = {}
    for name, (paper, method, params) in CASES.items():
        spec = next(s for s in expand(load(ROOT / "paper_configs" / f"{paper}.yaml", "ci")) if s.method == method)
        assert spec.procedure == name
        out[name] = _tiny(dataclasses.replace(spec, params=dataclasses.replace(spec.params, **params)))
    return out


def test_every_registered_procedure_has_a_case():
    assert set(CASES) == set(PROCEDURES)


def _values(row: dict, prefix: str = "") -> dict[str, float]:
    """A row's numbers as MLflow keys: nested dicts flattened to ``a/b``; lists (per-epoch records) apart."""
    out = {}
    for k, v in row.items():
        if k in ("axis", "index") or isinstance(v, (bool, list, str)):
            continue
        if isinstance(v, dict):
            out.update(_values(v, f"{prefix}{k}/"))
        elif v is not None and not math.isnan(v):
            out[prefix + k] = float(v)
    return out


def _target(spec) -> float:
    p = spec.params
    if spec.procedure == "iterative":
        return (1 - p.prune_rate) ** p.rounds
    if spec.procedure == "cycles":
        return (1 - p.base_rate - p.ap_rate) ** p.cycles
    if spec.procedure == "gradual":  # the cubic schedule's density at its last update (INCHEON: none at t_end)
        spe, total = 4, duration_steps(spec.training.pretrain, 4)
        cubic = Cubic(spec.target_sparsity, duration_steps(p.start, spe), duration_steps(p.end, spe), p.update_every,
                      p.initial_sparsity, p.freeze_after_end)
        return cubic.density(max(t for t in range(total) if cubic.is_update(t)))
    return spec.target_density


@pytest.fixture(scope="module")
def runs(specs, data_root, tmp_path_factory):
    """procedure -> (rows of an uninterrupted run and its work dir, MLflow's rows of it, rows of a killed and resumed
    run and its work dir, optimizer steps of (the uninterrupted run, the killed one, its resumption))."""
    torch.set_num_threads(1)
    stepped: list[int] = []  # optimizer steps taken, one entry per step, over every run of the fixture

    class Count(StepHooks):
        def after_optimizer_step(self, step):
            stepped.append(1)

    def counting(*a, hooks=None, **k):
        return real(*a, hooks=HookChain(hooks, Count()), **k)

    real, stage_module.train = stage_module.train, counting
    try:
        return _runs(specs, data_root, tmp_path_factory, stepped)
    finally:
        stage_module.train = real


def _runs(specs, data_root, tmp_path_factory, stepped):
    out = {}
    for name, spec in specs.items():
        start = sum(stepped)
        root = tmp_path_factory.mktemp(name)
        tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}")
        m = load(ROOT / "paper_configs" / f"{CASES[name][0]}.yaml", "ci")
        mid = tracker.open(spec.paper, spec, run_tags(spec, m), "contract")
        full = run_spec(spec, Context(paths=Paths(root / "a"), data_root=data_root, device="cpu",
                                      report=lambda r: tracker.log_row(mid, r)))
        steps_full = sum(stepped) - start
        kill = ("epoch", 1) if procedure(spec).axis == "epoch" else ("round", 1)
        with pytest.raises(Interrupted):
            run_spec(spec, Context(paths=Paths(root / "b"), data_root=data_root, device="cpu", stop_after=kill))
        steps_killed = sum(stepped) - start - steps_full
        resumed = run_spec(spec, Context(paths=Paths(root / "b"), data_root=data_root, device="cpu"))
        steps = (steps_full, steps_killed, sum(stepped) - start - steps_full - steps_killed)
        out[name] = (full, root / "a", tracker.rows(mid), resumed, root / "b", steps)
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_reported_rows_are_the_planned_rows(name, specs, runs):
    spec, (full, *_) = specs[name], runs[name]
    assert [(r["axis"], r["index"]) for r in full] == procedure(spec).planned_rows(spec)
    assert full[-1]["axis"] == "final" and len(full) >= 3


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_killed_run_resumes_to_the_uninterrupted_result(name, specs, runs):
    spec = specs[name]
    full, a, _, resumed, b, (steps_full, steps_killed, steps_resumed) = runs[name]
    assert resumed == full
    # resumed where it stopped: no step trained twice, none skipped
    assert steps_killed > 0 and steps_killed + steps_resumed == steps_full
    assert steps_resumed > 0 or name == "one_shot"  # one round: killed after it, only the final row is left
    fa, fb = (torch.load(folder(Paths(d), spec).final) for d in (a, b))
    assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)


@pytest.mark.parametrize("name", sorted(CASES))
def test_final_density_is_on_target(name, specs, runs):
    spec, full = specs[name], runs[name][0]
    masks = torch.load(folder(Paths(runs[name][1]), spec).masks_final)
    kept, total = sum(int(m.sum()) for m in masks.values()), sum(m.numel() for m in masks.values())
    assert full[-1]["density"] == pytest.approx(kept / total, abs=1e-12)  # the row reports the saved mask
    # exact counts (round(d N)) for selections to a density; per-round rounding, and DSR's per-layer int(d n + 0.1)
    tol = {"iterative": 2 * 2 / total, "cycles": 2 * 2 / total, "dynamic": 0.01}.get(name, 0.5 / total)
    assert abs(kept / total - _target(spec)) <= tol


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_model_a_run_ends_with_is_the_sparse_one_it_reports(name, specs, runs, data_root):
    spec, full, work = specs[name], runs[name][0], runs[name][1]
    f = folder(Paths(work), spec)
    state, masks = torch.load(f.final), torch.load(f.masks_final)
    for n, m in masks.items():
        assert bool((state[n][~m] == 0).all()), f"{n}: masked entries are not zero in final.pt"
    model = build_model(spec.model.arch, spec.num_classes, spec.model.width, spec.model.init)
    model.load_state_dict(state)
    data = load_data(spec.dataset, Context(paths=Paths(work / "a"), data_root=data_root, device="cpu"))
    got = evaluate.evaluate_model(model, data, spec.eval, spec.seed, spec.training.precision)
    assert got["test_acc"] == full[-1]["test_acc"] and got["test_loss"] == full[-1]["test_loss"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_value_reaches_mlflow(name, specs, runs):
    full, logged = runs[name][0], runs[name][2]
    axis = procedure(specs[name]).axis
    n = 0
    for r in full:
        where = logged["final"][0] if r["axis"] == "final" else logged[r["axis"]][r["index"]]
        for k, v in _values(r).items():
            assert where.get(k) == v, (r["axis"], r["index"], k)
            n += 1
        for e in r.get("epochs", []):  # per-epoch records of a round (AP's recorded retraining): retrain/<metric>
            step = (r["index"] - 1) * len(r["epochs"]) + e["epoch"]
            for k, v in _values({k: v for k, v in e.items() if k != "epoch"}).items():
                assert logged["retrain"][step][k] == v, (r["index"], e["epoch"], k)
                n += 1
    assert n > 10 * len(full) and set(logged) >= {axis, "final"}
