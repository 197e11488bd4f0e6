"""Lockstep: the project's AP cycles against AP's released code (tests/reference/ap_code.py, with the manifest's
declared deviations switched on).

The project side is the real procedure: :class:`harness.pruning.methods.cycles.Cycles` run through
:func:`harness.stage.run_spec` (cycle 0 = the shared dense training, then per cycle the re-init or rewind, the masked
first training through :func:`harness.train.train`, :func:`~harness.pruning.ap.prune_cycle` with
:func:`~harness.pruning.ap.ap_step`, the reset and the recorded retraining). Recorder hooks and wrappers see
every optimizer step and every pruning step. The reference side is the transcription fed the same init (the
project's init.pt, and for ``reinit`` each cycle's fresh draw, parameters only, as ``weight_init`` would give), the
same batches in the same order (:func:`tests.reference.common.batch_stream` with each training's stage seed), and
the same optimizer settings (SGD 0.9 / 5e-4; the code's per-iteration LR rule).

Setting: ResNet-20 option B at width 1/4 with AP's init (``ap_xavier``; 17.5k parameters, maskable set ``all_weights``:
every ``*weight``, BN gamma included), 12 random 16 x 16 images at batch 8 (2 steps per epoch, the second partial,
``drop_last`` false as the code's loader), 4 epochs per training, 2 pruning cycles after the dense cycle 0, 18 % + 2 %.
The LR is the code's rule scaled: 0.1 / 3 per iteration for 3 iterations (steps 0-2; step 3 holds at the peak),
0.01 from 0-based epoch 2 (step 4), 0.001 from epoch 3 (step 6).

Compared, exactly (``torch.equal``; the float operations are the same on both sides): the LR of every step, the full
state (parameters and BN buffers) at the start of every training and after every optimizer step, masks, maskable
weights and counts (alive_before, n_ap, base_pruned, ap_removed) after every pruning step, and the density of every
cycle's row. Planted differences (the warm-up one iteration late, n_ap counted after the base step, the movement
measured from the original init) must make the comparison fail.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from harness import stage
from harness import train as train_module
from harness.config.load import load
from harness.grid.expand import expand
from harness.config.schema import LRScheduleConfig
from harness.data.device import DeviceData
from harness.stage import Context
from harness.stage import run_spec
from harness.models.build import build_model
from harness.paths import Paths
from harness.pruning import ap
from harness.pruning.masks import MaskSet
from harness.pruning.methods import dense_spec
from harness.train import HookChain, StepHooks, stage_seed
from tests.reference import ap_code
from tests.reference.common import MEAN, STD, batch_stream

AP_YAML = Path(__file__).resolve().parents[2] / "paper_configs" / "ap.yaml"
N_TRAIN, BATCH, SPE, EPOCHS, CYCLES = 12, 8, 2, 4, 2
SCHEDULE = ap_code.Schedule(set_lr=0.1, warmup_iters=3, first_drop=2, second_drop=3)
LR_CFG = LRScheduleConfig("warmup_fixed", warmup_per_iter=0.1 / 3, warmup_iters=3, fixed=((2, 0.01), (3, 0.001)))


def _data(n: int, n_test: int, size: int = 16) -> DeviceData:
    """Random uint8 images (3 x size x size; the model pools adaptively) with CIFAR's normalisation, zero-pad crop
    and flip, as :func:`tests.reference.common.tiny_data` at a quarter of the pixels (the CPU cost)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n + n_test, 3, size, size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n + n_test,), generator=g)
    return DeviceData(x[:n], y[:n], x[n:], y[n:], MEAN, STD, 4, "zeros", True)


DATA = _data(N_TRAIN, 8)


def tiny_spec(method: str, **params):
    """The ci spec of ``method`` (seed 0) made as small as the setting above."""
    s = next(x for x in expand(load(AP_YAML, profile="ci")) if x.method == method and x.seed == 0)
    # the released script's recipe (profile released_script): its re-init ap_xavier and weight decay 5e-4
    script = next(x for x in expand(load(AP_YAML, profile="released_script")) if x.method == method)
    assert script.model.init == "ap_xavier" and script.training.optimizer.weight_decay == 5e-4
    t = dataclasses.replace(s.training, batch_size=BATCH, pretrain=f"{EPOCHS}ep", retrain=f"{EPOCHS}ep",
                            lr_schedule=LR_CFG, optimizer=script.training.optimizer)
    ev = dataclasses.replace(s.eval, batch_size=8, train_examples=8, test_examples=8)
    return dataclasses.replace(s, model=dataclasses.replace(s.model, init=script.model.init), training=t, eval=ev,
                               params=dataclasses.replace(s.params, cycles=CYCLES, **params))


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class _Recorder(StepHooks):
    """The project side of one training: the state it starts from, the LR of every step, the state after every step
    (after the procedure's own hooks: the mask re-applied)."""

    def __init__(self, model, optimizer):
        self.model, self.optimizer = model, optimizer
        self.start, self.lrs, self.steps = None, [], []

    def before_forward(self, step):
        if self.start is None:
            self.start = _snapshot(self.model)

    def before_optimizer_step(self, step):
        self.lrs.append(self.optimizer.param_groups[0]["lr"])

    def after_optimizer_step(self, step):
        self.steps.append(_snapshot(self.model))


_REAL_TRAIN, _REAL_PRUNE = train_module.train, ap.prune_cycle


def project_run(spec, root: Path, mp: pytest.MonkeyPatch):
    """Run the project's procedure; returns (rows, events in order, the dense model's folder)."""
    events: list[dict] = []
    real_train, real_prune = _REAL_TRAIN, _REAL_PRUNE

    def recording_train(model, data, *, optimizer, seed, hooks=None, **kw):
        rec = _Recorder(model, optimizer)
        res = real_train(model, data, optimizer=optimizer, seed=seed, hooks=HookChain(hooks, rec), **kw)
        events.append({"kind": "train", "seed": seed, "lrs": rec.lrs, "start": rec.start, "steps": rec.steps,
                       "state": _snapshot(model)})
        return res

    def recording_prune(masks, *a, **k):
        stats, gone = real_prune(masks, *a, **k)
        events.append({"kind": "prune", "counts": stats, "mask": {n: m.clone() for n, m in masks.masks.items()},
                       "weights": {n: p.detach().clone() for n, p in masks.params.items()}})
        return stats, gone

    mp.setattr(stage, "train", recording_train)
    mp.setattr(ap, "prune_cycle", recording_prune)
    mp.setattr(stage, "load_data", lambda ds, ctx: DATA)
    rows = run_spec(spec, Context(paths=Paths(root), device="cpu"))
    return rows, events, Paths(root).dense_dir(dense_spec(spec).id)


def reference_run(spec, dense_dir: Path, dev: ap_code.Deviations = ap_code.DECLARED) -> list[ap_code.Event]:
    """The transcription on the same init, batches and schedule."""
    original = torch.load(dense_dir / "init.pt")
    model = build_model(spec.model.arch, spec.num_classes, spec.model.width, spec.model.init)
    model.load_state_dict(original)

    def reinit(m, k):  # the code's weight_init draw, here the project's draw for cycle k: parameters only
        theta0 = stage.fresh_model(spec, "cpu", f"cycles/init{k}").state_dict()
        with torch.no_grad():
            for n, p in m.named_parameters():
                p.data.copy_(theta0[n])

    def batches(name):
        return batch_stream(DATA, stage_seed(spec.seed, name), BATCH, False)

    return ap_code.run_cycles(model, CYCLES, EPOCHS, SPE, batches, reinit if spec.params.mode == "reinit" else None,
                              SCHEDULE, percent=20, percent_ap=2, dev=dev, trace=True)


def _state_diff(a: dict, b: dict, keys=None) -> str | None:
    for k in keys or a:
        if not torch.equal(a[k], b[k]):
            n, worst = int((a[k] != b[k]).sum()), float((a[k].double() - b[k].double()).abs().max())
            return f"{k}: {n} of {a[k].numel()} entries differ (max {worst:.3g})"
    return None


def compare(spec, rows, project: list[dict], reference: list[ap_code.Event]) -> list[str]:
    """Every mismatch between the two runs, in order ([] when they agree)."""
    out: list[str] = []
    kinds = [(e["kind"], e.get("seed")) for e in project]
    expected = [("train", stage_seed(spec.seed, "pretrain"))]
    for k in range(1, CYCLES + 1):
        expected += [("train", stage_seed(spec.seed, f"cycles/cycle{k}/train")), ("prune", None),
                     ("train", stage_seed(spec.seed, f"cycles/cycle{k}/retrain"))]
    if kinds != expected or len(reference) != len(project):
        return [f"event sequence: project {kinds}, reference {[(e.what, e.cycle) for e in reference]}"]
    for p, r in zip(project, reference):
        where = f"{r.what} of cycle {r.cycle}"
        if p["kind"] == "train":
            if p["lrs"] != r.lrs:
                i = next(i for i, (a, b) in enumerate(zip(p["lrs"], r.lrs)) if a != b)
                out.append(f"{where}: LR at step {i}: project {p['lrs'][i]!r}, reference {r.lrs[i]!r}")
            if d := _state_diff(p["start"], r.start):
                out.append(f"{where}: start state: {d}")
            for i, (a, b) in enumerate(zip(p["steps"], r.steps)):
                if d := _state_diff(a, b):
                    out.append(f"{where}: after step {i}: {d}")
                    break
        else:
            counts = {k: r.counts[k] for k in ("alive_before", "n_ap", "base_pruned", "ap_removed")}
            mine = {k: p["counts"][k] for k in counts}
            if mine != counts:
                out.append(f"{where}: counts: project {mine}, reference {counts}")
            ref_mask = {n: m != 0 for n, m in r.mask.items()}
            if d := _state_diff(p["mask"], ref_mask):
                out.append(f"{where}: mask: {d}")
            if d := _state_diff(p["weights"], r.state, list(p["weights"])):
                out.append(f"{where}: weights: {d}")
            n_all = sum(m.numel() for m in ref_mask.values())
            density = sum(int(m.sum()) for m in ref_mask.values()) / n_all
            if rows[r.cycle]["density"] != density:
                out.append(f"{where}: row density {rows[r.cycle]['density']} != reference {density}")
    return out


@pytest.fixture(autouse=True)
def _threads():
    """One CPU thread (overrides conftest's two): both sides run alike, and the tiny convolutions run ~10x faster on
    a shared 2-core machine without the threads' synchronisation."""
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="module")
def lockstep(tmp_path_factory):
    """Both runs of both modes (reinit: global magnitude + AP; lt: IMP/LTH + AP)."""
    torch.set_num_threads(1)
    out = {}
    for method in ("global_mag_ap", "lth_ap"):
        spec = tiny_spec(method)
        with pytest.MonkeyPatch.context() as mp:
            rows, events, dense = project_run(spec, tmp_path_factory.mktemp(method), mp)
        out[spec.params.mode] = (spec, rows, events, dense, reference_run(spec, dense))
    return out


# ----------------------------------------------------------------------------- the lockstep


@pytest.mark.parametrize("mode", ["reinit", "lt"])
def test_cycles_agree_with_the_released_code_at_every_step(lockstep, mode):
    spec, rows, project, dense, reference = lockstep[mode]
    assert spec.params.mode == mode and spec.prunable == "all_weights" and spec.model.init == "ap_xavier"
    assert compare(spec, rows, project, reference) == []
    trainings = [e for e in project if e["kind"] == "train"]
    assert len(trainings) == 1 + 2 * CYCLES and all(len(e["lrs"]) == SPE * EPOCHS == len(e["steps"]) for e in trainings)
    # the LR at the boundaries, spelled out: first step, last warm-up step, the hold, the first fixed epochs
    lrs = trainings[0]["lrs"]
    assert lrs[0] == 0.1 / 3 and lrs[2] == pytest.approx(0.1) and lrs[3] == lrs[2] and lrs[1] < lrs[2]
    assert lrs[4:6] == [0.01] * 2 and lrs[6:] == [0.001] * 2
    assert all(e["lrs"] == lrs for e in trainings)  # every training starts its schedule over
    # the cycle's counts (n_ap before the base step, exact counts) and the rows' densities
    prunes = [e["counts"] for e in project if e["kind"] == "prune"]
    n = rows[1]["alive_before"]
    assert n == 17328 and prunes[0]["alive_before"] == n  # the maskable set (conv + BN gamma + linear) at width 1/4
    for k, c in enumerate(prunes, 1):
        u = c["alive_before"]
        assert c["n_ap"] == int(0.02 * u) == c["ap_removed"] and c["base_pruned"] == round(0.18 * u)
        assert rows[k]["density"] * n == pytest.approx(u - c["base_pruned"] - c["n_ap"])
    # the recorded retraining ends with exactly its mask, and is started from theta_0 * m
    assert all(rows[k]["masked_nonzero"] == 0 for k in (1, 2))


def test_the_rules_at_their_boundaries():
    """The transcription's percentile is numpy's; the code's AP threshold removes n_ap + 1 (plus ties) where the
    project removes n_ap; its IndexError at |C| = n_ap is the guard's case; ties go to the lower index."""
    np = pytest.importorskip("numpy")
    g = torch.Generator().manual_seed(0)
    for n in (2, 3, 17, 100, 1001, 17272):
        v = torch.randn(n, generator=g).abs()
        for q in (2, 18, 20):
            assert float(ap_code.percentile_linear(v, q)) == float(np.percentile(v.numpy(), q))
    # AP step on a hand-made tensor: candidates -1, -2, -3, -4 (movements 1, 2, 3, 4 from 0), n_ap = 2
    from torch import nn

    def one(values):
        m = nn.Linear(len(values), 1, bias=False)
        with torch.no_grad():
            m.weight.copy_(torch.tensor([values]))
        return m

    for dev, removed in ((ap_code.CODE, 3), (ap_code.DECLARED, 2)):
        m = one([-1.0, -2.0, 5.0, -3.0, -4.0])
        mask = {"weight": torch.ones(1, 5)}
        assert ap_code.ap_step(m, mask, {"weight": torch.zeros(1, 5)}, 2, dev) == removed
    m = one([-1.0, -1.0, -1.0, 2.0])  # ties: the code takes all three, the exact rule the first two
    assert ap_code.ap_step(m, {"weight": torch.ones(1, 4)}, {"weight": torch.zeros(1, 4)}, 1, ap_code.CODE) == 3
    mask = {"weight": torch.ones(1, 4)}
    assert ap_code.ap_step(one([-1.0, -1.0, -1.0, 2.0]), mask, {"weight": torch.zeros(1, 4)}, 2, ap_code.DECLARED) == 2
    assert mask["weight"].tolist() == [[0.0, 0.0, 1.0, 1.0]]
    with pytest.raises(IndexError):  # |C| = n_ap: the code's sort has no index n_ap
        ap_code.ap_step(one([-1.0, 2.0]), {"weight": torch.ones(1, 2)}, {"weight": torch.zeros(1, 2)}, 1, ap_code.CODE)
    guarded = dataclasses.replace(ap_code.CODE, guard=True)
    assert ap_code.ap_step(one([-1.0, 2.0]), {"weight": torch.ones(1, 2)}, {"weight": torch.zeros(1, 2)}, 1,
                           guarded) == 1
    # the project's ap_step on the same ties and guard
    w = nn.Parameter(torch.tensor([-1.0, -1.0, -1.0, 2.0]))
    masks = MaskSet({"w": w})
    stats, gone = ap.ap_step(masks, {"w": torch.zeros(4)}, 2)
    assert gone["w"].tolist() == [True, True, False, False] and stats["ap_removed"] == 2
    # the code's LR rule at its own boundaries: 20,000 additions, then the hold; overrides by 0-based epoch
    lr = ap_code.LR(ap_code.Schedule())
    got = [lr.before_step(i // 782) for i in range(782 * 26)]
    assert got[0] == 5e-6 and got[19549] == pytest.approx(0.09775) and got[19550] == 0.01
    assert train_module.warmup_fixed_lr(
        LRScheduleConfig("warmup_fixed", warmup_per_iter=5e-6, warmup_iters=20000, fixed=((25, 0.01), (32, 0.001))),
        782)(19549) == got[19549]


# ----------------------------------------------------------------------------- planted differences


def test_planted_late_warmup_fails(lockstep, tmp_path):
    """The previous rule (step i at i * warmup_per_iter: the first step at LR 0) in the project."""
    spec, _, _, _, reference = lockstep["reinit"]

    def late(cfg, spe):
        def lr(i):
            out = cfg.warmup_per_iter * min(i, cfg.warmup_iters)
            for e, v in cfg.fixed:
                if i // spe >= e:
                    out = v
            return out

        return lr

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_module, "warmup_fixed_lr", late)
        rows, events, _ = project_run(spec, tmp_path, mp)
    problems = compare(spec, rows, events, reference)
    assert problems and problems[0].startswith(f"train of cycle 0: LR at step 0: project 0.0, reference {0.1 / 3!r}")


def test_planted_n_ap_counted_after_the_base_step_fails(lockstep, monkeypatch):
    """n_ap from the pool left after the base step (a copy of the transcription's rule, changed)."""
    spec, rows, project, dense, _ = lockstep["reinit"]
    real = ap_code.base_step

    def counted_after(model, mask, percent, dev):
        _, pruned = real(model, mask, percent, dev)
        return ap_code._pools(model, dev)[0].numel(), pruned

    monkeypatch.setattr(ap_code, "base_step", counted_after)
    problems = compare(spec, rows, project, reference_run(spec, dense))
    assert problems and problems[0].startswith("prune of cycle 1: counts")


def test_planted_movement_from_the_original_init_fails(lockstep, tmp_path):
    """|theta_T - theta_init| (the original init) instead of |theta_T - theta_0| (this cycle's init), in the
    project (its movement_reference option)."""
    spec, _, _, _, reference = lockstep["reinit"]
    planted = dataclasses.replace(spec, params=dataclasses.replace(spec.params, movement_reference="original_init"))
    with pytest.MonkeyPatch.context() as mp:
        rows, events, _ = project_run(planted, tmp_path, mp)
    problems = compare(spec, rows, events, reference)
    assert problems and problems[0].startswith("prune of cycle 1: mask")


# ----------------------------------------------------------------------------- the declared deviations, measured


def _model_at(spec, state):
    m = build_model(spec.model.arch, spec.num_classes, spec.model.width, spec.model.init)
    m.load_state_dict(state)
    return m


def test_declared_deviations_measured(lockstep, capsys):
    """Each declared deviation switched off alone, on the same inputs as the lockstep (the project's theta_T, theta_0
    and mask of each cycle; the same batches): what the released code's rule does instead, by how much. The figures
    are printed (pytest -s) and their shape asserted."""
    spec, rows, project, dense, reference = lockstep["reinit"]
    figures = []
    trains = [e for e in project if e["kind"] == "train"]
    prunes = [e for e in project if e["kind"] == "prune"]
    for k in range(1, CYCLES + 1):
        first, pruned = trains[2 * k - 1], prunes[k - 1]
        u, n_ap = pruned["counts"]["alive_before"], pruned["counts"]["n_ap"]
        mask_before = {n: torch.ones_like(m, dtype=torch.float32) if k == 1 else prunes[k - 2]["mask"][n].float()
                       for n, m in pruned["mask"].items()}
        start = {n: first["start"][n] for n in mask_before}
        results = {}
        for label, dev in (("declared", ap_code.DECLARED),
                           ("percentile", dataclasses.replace(ap_code.DECLARED, exact_base_count=False)),
                           ("duplicate pool", dataclasses.replace(ap_code.DECLARED, no_duplicate_pool=False)),
                           ("n_ap + 1", dataclasses.replace(ap_code.DECLARED, exact_n_ap=False)),
                           ("code", dataclasses.replace(ap_code.CODE, guard=True))):
            m = _model_at(spec, first["state"])
            mask = {n: v.clone() for n, v in mask_before.items()}
            pool, base = ap_code.base_step(m, mask, 18, dev)
            removed = ap_code.ap_step(m, mask, start, ap_code.n_ap_of(pool, 2), dev)
            results[label] = (pool, ap_code.n_ap_of(pool, 2), base, removed,
                              sum(int(((mask[n] != 0) != pruned["mask"][n]).sum()) for n in mask))
        assert results["declared"] == (u, n_ap, u - round(u * (1 - 0.18)), n_ap, 0)
        assert abs(results["percentile"][2] - results["declared"][2]) <= 1  # "< percentile" vs the exact count
        assert results["n_ap + 1"][3] >= n_ap + 1  # n_ap + 1 plus ties
        figures.append((k, u, n_ap, results))
    # the recorded retraining on the first training's optimizer (defect 3): this cycle's pruned weights regrow
    stale = reference_run(spec, dense, dataclasses.replace(ap_code.DECLARED, enforce_mask=False))
    regrown = []
    for k in range(1, CYCLES + 1):
        ev = next(e for e in stale if e.what == "retrain" and e.cycle == k)
        prev = next(e for e in stale if e.what == "train" and e.cycle == k).mask
        now = {n: m != 0 for n, m in ev.mask.items()}
        this_cycle = sum(int(((prev[n] != 0) & ~now[n]).sum()) for n in now)
        moved = sum(int(((prev[n] != 0) & ~now[n] & (ev.state[n] != 0)).sum()) for n in now)
        regrown.append((k, moved, this_cycle))
    assert regrown[0][1] > 0
    # BN running statistics kept (defect 13): the training is unchanged, only the buffers differ
    kept = reference_run(spec, dense, dataclasses.replace(ap_code.DECLARED, reset_bn_stats=False))
    params = [n for n, _ in _model_at(spec, reference[0].state).named_parameters()]
    assert all(_state_diff(a.state, b.state, params) is None for a, b in zip(kept, reference))
    bn_diff = max(float((kept[i].start[n] - reference[i].start[n]).abs().max())
                  for i in range(len(kept)) if kept[i].start is not None
                  for n in reference[i].start if "running_var" in n)
    # lt biases aliased (defect 6): the rewind of the biases goes to trained values
    lt_spec, _, _, lt_dense, lt_reference = lockstep["lt"]
    aliased = reference_run(lt_spec, lt_dense, dataclasses.replace(ap_code.DECLARED, bias_copy=False))
    biases = [n for n in lt_reference[0].state if n.endswith("bias")]
    first_retrain = next(i for i, e in enumerate(lt_reference) if e.what == "retrain")
    a_start, r_start = aliased[first_retrain].start, lt_reference[first_retrain].start
    bias_moved = sum(int((a_start[n] != r_start[n]).sum()) for n in biases)
    bias_total = sum(lt_reference[0].state[n].numel() for n in biases)
    with capsys.disabled():
        print("\nAP deviations measured (lockstep setting, reinit, seed 0):")
        for k, u, n_ap, r in figures:
            print(f"  cycle {k}: alive {u}, n_ap {n_ap}; "
                  "(pool, n_ap, base removed, AP removed, mask entries != project):")
            for label, v in r.items():
                print(f"    {label:15s} {v}")
        for k, moved, total in regrown:
            print(f"  stale optimizer in the recorded retraining, cycle {k}: {moved} of the {total} entries pruned "
                  f"this cycle end nonzero")
        print(f"  BN stats kept: parameters identical at every step; running_var at a training's start differs by "
              f"up to {bn_diff:.3g}")
        print(f"  lt aliased biases: {bias_moved} of {bias_total} bias entries start cycle 1's recorded retraining "
              f"away from the init")
    assert bias_moved > 0 and bn_diff > 0
