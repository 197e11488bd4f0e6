"""Lockstep: the project's DPF, Incremental and One-shot P+FT against the transcription of INCHEON's code
(tests/reference/inchon_dpf.py), on ResNet-20 (option B) at width 1/4 (16,972 prunable conv weights).

Both sides start from the same initialisation, get the same batches in the same order
(:func:`~tests.reference.common.batch_stream`), the same SGD (lr 0.2, Nesterov momentum 0.9, weight decay
1e-4) and LR milestones (epochs 13 and 20, gamma 0.1). The project runs its own code:
:class:`~harness.pruning.methods.gradual.ReselectHook` inside :func:`harness.train.train` (DPF, Incremental)
and the real :class:`~harness.pruning.methods.iterative.OneShot` procedure through
:func:`harness.stage.run_spec` (One-shot P+FT). After EVERY step the test compares the masks, the masked
weights the forward pass saw, every parameter and buffer (DPF: the dense weights; Incremental and One-shot:
``m * w`` for the masked convs, since the project zeroes pruned weights while the transcription, as the
reference semantics, only masks them), the regrowth count and the density; at every epoch end the
evaluation. All comparisons are exact (``torch.equal``): both sides do the same float operations in the same
order, so no tolerance is needed or allowed.

The reference runs with the project's one declared deviation that changes a rule here, ``dpf_exact_k``
(exactly ``round((1 - s) N)`` weights kept); the test also measures that deviation with it switched off.
Planted differences (the old "select_ zeroes the dense weights" bug, gating one step early, ``>=`` for
``>``, ``int`` for ``round``) must make the comparison fail.

Setting: 92 training images, batch 8, no drop_last: 12 iterations per epoch (the last one of 4 images);
300 iterations (25 epochs); mask every 12 iterations until epoch 20 (t_end = 240): 20 updates, at iterations
11, 23, ..., 239; frozen afterwards (the next due iteration, 251, does not update). Images are 16x16 to halve
the cost; both sides run on one CPU thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from harness.config import LRScheduleConfig, OptimizerConfig
from harness.data.device import DeviceData
from harness.pruning.masks import MaskSet
from harness.pruning.schedules import Cubic
from harness.pruning.steps import Reselect
from harness.pruning.updates import ReselectHook
from harness.train import HookChain, StepHooks, evaluate, make_optimizer, make_scheduler, train
from harness.units import duration_steps, steps_per_epoch

from . import inchon_dpf as ref_dpf
from .common import MEAN, STD, TrainCall, batch_stream, clone_model, record_trainings, tiny_resnet20

N_TRAIN, BATCH, SEED = 92, 8, 7
SPE = steps_per_epoch(N_TRAIN, BATCH, False)  # 12
STEPS, EVERY, TARGET = 300, 12, 0.9
MILESTONES = (13, 20)  # epochs; the second is t_end (INCHEON: --milestones 150 225 -> t_end epoch 225)
END = MILESTONES[1] * SPE  # 240
LR, MOMENTUM, WD = 0.2, 0.9, 1e-4
UPDATES = [t for t in range(END) if (t + 1) % EVERY == 0]  # 11, 23, ..., 239


def _data() -> DeviceData:
    """Random 16x16 images (a quarter of the compute of 32x32: the ResNet's average pool is adaptive), CIFAR's
    normalisation, crop (padding 4) and flip, as :func:`~tests.reference.common.tiny_data` but smaller."""
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (N_TRAIN + 32, 3, 16, 16), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (N_TRAIN + 32,), generator=g)
    return DeviceData(x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:], MEAN, STD, 4, "zeros", True)


def _state(model, masked: bool = False) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, by name (the transcription's ``mask`` buffers left out). ``masked``: a
    masked conv's weight as ``w * mask`` (the Incremental transcription leaves the dense values of pruned
    entries to the optimiser; the project zeroes them; only ``m * w`` is ever used)."""
    out = {n: p.detach().clone() for n, p in model.named_parameters()}
    if masked:
        out.update({f"{n}.weight": (m.weight * m.mask).detach() for n, m in model.named_modules()
                    if isinstance(m, ref_dpf.MaskConv2d)})
    out.update({n: b.detach().clone() for n, b in model.named_buffers() if not n.endswith(".mask")})
    return out


# ------------------------------------------------------------------------------------------- the project


@dataclass
class Step:
    masks: list[torch.Tensor]
    seen: list[torch.Tensor]  # the prunable weights as the forward pass saw them
    updates: int
    regrown: int
    density: float
    state: dict[str, torch.Tensor] | None = None  # after the optimizer step
    dense_before: list[torch.Tensor] | None = None  # at an update step, before the update


@dataclass
class Trace:
    steps: list[Step] = field(default_factory=list)
    evals: dict[int, tuple[float, float]] = field(default_factory=dict)
    eval_zero: dict[int, bool] = field(default_factory=dict)  # masked entries exactly 0 while evaluating
    eval_restored: dict[int, bool] = field(default_factory=dict)  # dense weights unchanged by evaluation
    init: dict[str, torch.Tensor] | None = None


class _Before(StepHooks):
    """Runs before the cubic hook: the dense weights at a due step, before the update."""

    def __init__(self, masks: MaskSet, trace: Trace):
        self.masks, self.trace = masks, trace
        self.pending = None

    def before_forward(self, step):
        self.pending = [p.detach().clone() for p in self.masks.params.values()] if (step + 1) % EVERY == 0 else None


class _Record(StepHooks):
    """Runs after the cubic hook: what the step used and produced; an evaluation at every epoch end."""

    def __init__(self, model, hook: ReselectHook, before: _Before, trace: Trace, data):
        self.model, self.hook, self.before, self.trace, self.data = model, hook, before, trace, data

    def before_forward(self, step):
        m = self.hook.masks
        self.trace.steps.append(Step([v.clone() for _, v in m], [p.detach().clone() for p in m.params.values()],
                                     self.hook.updates, self.hook.reactivation.total, m.density(),
                                     dense_before=self.before.pending))

    def after_optimizer_step(self, step):
        self.trace.steps[-1].state = _state(self.model)

    def after_epoch(self, epoch, state):
        m = self.hook.masks
        dense = [p.detach().clone() for p in m.params.values()]
        with self.hook.effective_weights():
            self.trace.eval_zero[epoch] = all(bool((p.detach()[~v] == 0).all()) for p, (_, v) in zip(m.params.values(), m))
            self.trace.evals[epoch] = evaluate(self.model, self.data.eval_batches("test", 32))
        self.trace.eval_restored[epoch] = all(torch.equal(a, p.detach()) for a, p in zip(dense, m.params.values()))


@contextlib.contextmanager
def one_thread():
    """Both sides on one CPU thread: identical kernels, and no OpenMP spinning on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@one_thread()
def project_run(feedback: bool, steps: int = STEPS) -> tuple[Trace, torch.nn.Module]:
    """The project's ReselectHook through harness.train.train; returns the trace and a copy of the init."""
    data = _data()
    model = tiny_resnet20(seed=SEED)
    init = clone_model(model)
    masks = MaskSet.for_model(model, "conv_weights")  # dpf.yaml: prunable conv_weights
    hook = ReselectHook(masks, Reselect(Cubic(TARGET, start=0, end=duration_steps(f"{MILESTONES[1]}ep", SPE), every=EVERY),
                                        "magnitude", "global", feedback=feedback))
    opt = make_optimizer(OptimizerConfig("sgd", lr=LR, weight_decay=WD, momentum=MOMENTUM, nesterov=True),
                         model.parameters())
    sched = make_scheduler(opt, LRScheduleConfig("multistep", milestones=tuple(f"{m}ep" for m in MILESTONES),
                                                 gamma=0.1), SPE)
    trace = Trace()
    before = _Before(masks, trace)
    train(model, data, steps=steps, optimizer=opt, scheduler=sched, batch_size=BATCH, drop_last=False, seed=SEED,
          hooks=HookChain(before, hook, _Record(model, hook, before, trace, data)))
    trace.hook = hook
    hook.finish()  # the run's output: m * w
    trace.final = [p.detach().clone() for p in masks.params.values()]
    return trace, init


# ------------------------------------------------------------------------------------------- the comparison


@dataclass
class Tally:
    steps: int = 0
    masks_equal: int = 0
    seen_equal: int = 0
    state_equal: int = 0
    density_equal: int = 0
    regrown_equal: int = 0
    evals_equal: int = 0
    evals: int = 0
    first_mismatch: int | None = None
    max_abs_diff: float = 0.0  # over the parameters (not the BN statistics)
    mask_entries_differing_at_end: int = 0
    regrown_ref: int = 0
    regrown_project: int = 0
    ref_dense_at_update: dict = field(default_factory=dict)  # iteration -> the reference's dense conv weights

    @property
    def all_equal(self) -> bool:
        s = self.steps
        return (self.masks_equal == self.seen_equal == self.state_equal == self.density_equal == self.regrown_equal == s
                and self.evals_equal == self.evals)


@one_thread()
def lockstep(trace: Trace, init: torch.nn.Module, feedback: bool, steps: int = STEPS, stop_at_first: bool = False,
             cls=ref_dpf.InchonDPF, **switches) -> Tally:
    """Run the transcription on a copy of ``init`` with the same batches and compare it with ``trace``
    after every step. ``switches``: the transcription's (``exact_k`` defaults to on: the declared deviation)."""
    data = _data()
    model = clone_model(init)
    ref = cls(model, rate=TARGET, freq=EVERY, milestones=MILESTONES, iters_per_epoch=SPE, lr=LR, momentum=MOMENTUM,
              weight_decay=WD, nesterov=True, feedback=feedback, **{"exact_k": True, "imp": "L2", **switches})
    stream = batch_stream(data, SEED, BATCH, False)
    params = {n for n, _ in model.named_parameters()}
    tally = Tally()
    for t in range(steps):
        x, y = next(stream)
        if ref.due():
            tally.ref_dense_at_update[t] = [c.weight.detach().clone() for c in ref.convs]
        ref.iteration(x, y)
        got = trace.steps[t]
        ok_masks = all(torch.equal(a, b) for a, b in zip(got.masks, ref.masks()))
        ok_seen = all(torch.equal(a, b) for a, b in zip(got.seen, ref.seen()))
        ref_state = _state(model, masked=not feedback)
        diffs = [float((got.state[n] - v).abs().max()) for n, v in ref_state.items() if n in params]
        ok_state = all(torch.equal(got.state[n], v) for n, v in ref_state.items())
        ok_density = got.density == ref.density()
        ok_regrown = got.regrown == ref.regrown_total()
        tally.steps += 1
        tally.masks_equal += ok_masks
        tally.seen_equal += ok_seen
        tally.state_equal += ok_state
        tally.density_equal += ok_density
        tally.regrown_equal += ok_regrown
        tally.max_abs_diff = max(tally.max_abs_diff, *diffs)
        if (t + 1) % SPE == 0:
            epoch = (t + 1) // SPE
            tally.evals += 1
            tally.evals_equal += trace.evals[epoch] == ref.evaluate(data.eval_batches("test", 32))
        if not (ok_masks and ok_seen and ok_state and ok_density and ok_regrown) and tally.first_mismatch is None:
            tally.first_mismatch = t
            if stop_at_first:
                break
    last = trace.steps[tally.steps - 1]
    tally.mask_entries_differing_at_end = sum(int((a != b).sum()) for a, b in zip(last.masks, ref.masks()))
    tally.regrown_ref, tally.regrown_project = ref.regrown_total(), last.regrown
    tally.ref = ref
    return tally


@pytest.fixture(scope="module")
def dpf_trace():
    return project_run(feedback=True)


@pytest.fixture(scope="module")
def dpf_lockstep(dpf_trace):
    return lockstep(*dpf_trace, feedback=True)


@pytest.fixture(scope="module")
def incremental_trace():
    return project_run(feedback=False)


# ------------------------------------------------------------------------------------------- DPF


def test_dpf_equals_inchon_at_every_step(dpf_trace, dpf_lockstep):
    """300/300 steps: masks, forward weights, dense weights and every buffer, density and regrowth (742 entries
    came back on both sides) equal, exactly; evaluation equal at all 25 epoch ends."""
    t, trace = dpf_lockstep, dpf_trace[0]
    assert t.steps == STEPS and t.first_mismatch is None, t
    assert t.all_equal and t.max_abs_diff == 0.0
    assert t.evals == STEPS // SPE == 25
    assert [u.iteration for u in t.ref.updates] == UPDATES and len(UPDATES) == 20
    assert trace.hook.updates == 20
    # the feedback path is exercised: entries come back, on both sides alike
    assert t.regrown_ref == t.regrown_project == trace.hook.reactivation.total > 0
    assert trace.steps[-1].density == round(0.1 * 16972) / 16972 == t.ref.density()


def test_dpf_first_update_and_the_step_after(dpf_trace, dpf_lockstep):
    trace, first = dpf_trace[0], UPDATES[0]
    total = sum(m.numel() for m in trace.steps[0].masks)
    for t in range(first):  # dense until the first due iteration
        assert trace.steps[t].updates == 0 and all(bool(m.all()) for m in trace.steps[t].masks)
    s = trace.steps[first]
    rate = ref_dpf.cubic_rate(TARGET, first, END)
    assert s.updates == 1 and sum(int(m.sum()) for m in s.masks) == round((1 - rate) * total)
    assert dpf_lockstep.ref.updates[0].kept == round((1 - rate) * total)
    nxt = trace.steps[first + 1]  # the step after: no update, same mask
    assert nxt.updates == 1 and all(torch.equal(a, b) for a, b in zip(s.masks, nxt.masks))
    # the forward pass of the update step already sees the new mask (the update runs before the forward)
    assert all(bool((w[~m] == 0).all()) for w, m in zip(s.seen, s.masks))


def test_dpf_regrown_weight_keeps_its_dense_value(dpf_trace, dpf_lockstep):
    """An entry pruned at update u and back at update u+1 comes back with its dense value: the reference's
    dense trajectory (straight-through gradient and weight decay kept moving it), not 0."""
    trace = dpf_trace[0]
    found = 0
    for u, v in zip(UPDATES, UPDATES[1:]):
        before_u, at_u, at_v = trace.steps[u - 1].masks, trace.steps[u].masks, trace.steps[v].masks
        for i, (a, b, c) in enumerate(zip(before_u, at_u, at_v)):
            back = a & ~b & c  # pruned at u, regrown at v
            if not back.any():
                continue
            found += int(back.sum())
            ref_dense = dpf_lockstep.ref_dense_at_update[v][i]
            assert torch.equal(trace.steps[v].dense_before[i][back], ref_dense[back])
            assert torch.equal(trace.steps[v].seen[i][back], ref_dense[back])  # the forward pass sees it
            assert bool((ref_dense[back] != 0).all())
            # and it moved while it was pruned (it got gradient), so it is not the value it was pruned with
            assert not torch.equal(trace.steps[u].dense_before[i][back], ref_dense[back])
    print(f"{found} entries pruned at an update and back at the next one, each with its dense value")
    assert found > 0


def test_dpf_mask_frozen_after_end(dpf_trace, dpf_lockstep):
    trace = dpf_trace[0]
    last = UPDATES[-1]
    assert last == END - 1  # the last due iteration inside the schedule updates ...
    assert trace.steps[last].updates == 20
    first_past = last + EVERY  # ... the next due one (251) is past t_end: no update
    assert first_past >= END and (first_past + 1) % EVERY == 0
    for t in range(last, STEPS):
        assert trace.steps[t].updates == 20
        assert all(torch.equal(a, b) for a, b in zip(trace.steps[t].masks, trace.steps[last].masks))
    assert [u.iteration for u in dpf_lockstep.ref.updates][-1] == last
    # the target is not yet s_f at the last update; the project and INCHEON agree on the value
    rate = ref_dpf.cubic_rate(TARGET, last, END)
    assert rate < TARGET and trace.steps[last].density == round((1 - rate) * 16972) / 16972


def test_dpf_evaluation_sees_masked_weights_and_leaves_dense_ones(dpf_trace, dpf_lockstep):
    trace = dpf_trace[0]
    ref = dpf_lockstep.ref
    assert all(torch.equal(a, (c.weight * c.mask).detach()) for a, c in zip(trace.final, ref.convs))  # the output
    assert len(trace.evals) == 25
    assert all(trace.eval_zero.values()) and all(trace.eval_restored.values())
    assert dpf_lockstep.evals_equal == 25  # and the dense training after each evaluation stays in lockstep


def test_dpf_exact_k_deviation_measured(dpf_trace, dpf_lockstep):
    """``dpf_exact_k`` switched off: INCHEON's own rule (``> sorted[int(N s)]``) against the project.

    (a) on the same dense weights (the reference's, at each of the 20 updates), how many entries the two
    rules keep differently; (b) the whole run with INCHEON's rule: the trajectories part."""
    per_update = []
    for t in UPDATES:
        w = dpf_lockstep.ref_dense_at_update[t]
        scores = [ref_dpf.importance(x, "L2") for x in w]
        rate = ref_dpf.cubic_rate(TARGET, t, END)
        n = sum(len(s) for s in scores)
        a = np.concatenate(ref_dpf.keep_above(scores, ref_dpf.weight_threshold(scores, rate)))
        b = np.concatenate(ref_dpf.keep_exact(scores, round((1 - rate) * n)))
        per_update.append((int(a.sum()) - int(b.sum()), int((a != b).sum())))
    # INCHEON keeps N - int(N s) - 1 (one fewer than round((1 - s) N) where frac(N s) < 0.5), no ties
    assert all(d in (0, -1) and x == -d for d, x in per_update)
    fewer = sum(1 for d, _ in per_update if d == -1)
    assert fewer == 10, per_update
    run = lockstep(*dpf_trace, feedback=True, exact_k=False)
    assert per_update[0] == (-1, 1) and run.first_mismatch == UPDATES[0] and run.masks_equal == UPDATES[0]
    print(f"dpf_exact_k off: INCHEON keeps one weight fewer at {fewer} of 20 updates (same dense weights); "
          f"whole run: masks equal {run.masks_equal}/{run.steps}, weights equal {run.state_equal}/{run.steps}, "
          f"max |dw| {run.max_abs_diff:.3g}, {run.mask_entries_differing_at_end} mask entries differ at the end, "
          f"regrown {run.regrown_ref} (INCHEON) vs {run.regrown_project} (project)")
    assert run.mask_entries_differing_at_end > 0  # measured: 850 of 16,972; regrown 877 (INCHEON) vs 742


@pytest.mark.parametrize("every, spe, milestone", [(12, 12, 20), (16, 391, 2), (1, 5, 3), (7, 12, 3), (5, 4, 5)])
def test_gating_and_target_equal_inchon_at_every_iteration(every, spe, milestone):
    """The update gating and the cubic target, iteration by iteration over 0 .. t_end + 3 periods: the project
    updates exactly where INCHEON's ``(it + 1) % freq == 0 and (epoch + 1) <= milestones[1]`` holds (the first
    due iteration, the last one before t_end, none at or after it), to exactly the same density ``1 - s_t``
    (bit for bit; the exact-k count ``round((1 - s_t) N)`` is taken of it on both sides)."""
    end = milestone * spe
    conv = torch.nn.Conv2d(1, 1, 1, bias=False)
    hook = ReselectHook(MaskSet({"w": conv.weight}), Reselect(Cubic(TARGET, start=0, end=end, every=every), "magnitude", "global"))
    calls = []
    hook._update = lambda t: calls.append((t, hook.schedule.density(t)))
    ref = ref_dpf.InchonDPF(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1, bias=False)), rate=TARGET, freq=every,
                            milestones=(1, milestone), iters_per_epoch=spe, lr=LR, momentum=MOMENTUM,
                            weight_decay=WD, nesterov=True)
    expected = []
    for t in range(end + 3 * every):
        hook.before_forward(t)
        ref.iterations = t
        if ref.due():
            expected.append((t, 1.0 - ref.target()))  # the density: round(density * N) entries are kept
    assert calls == expected and calls[0][0] == every - 1 and calls[-1][0] < end <= calls[-1][0] + every


def test_dpf_tie_at_inchon_threshold_is_the_exact_k_deviation():
    """Ties at the threshold: |w| = (0.1, 0.2, 0.2, 0.2, 0.5, 0.7), s = 0.5. INCHEON: threshold = sorted[int(3.0)]
    = 0.2, keeps > 0.2: 2 weights (all three tied ones go: the "one extra weight plus ties" of dpf_exact_k);
    the project keeps exactly round(0.5 * 6) = 3, the tie to the lower index; the transcription with
    ``exact_k`` does the same, with L1 and L2 importance (the squares tie too)."""
    conv = torch.nn.Conv2d(1, 6, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.1, -0.2, 0.2, 0.2, 0.5, -0.7]).reshape(6, 1, 1, 1))
    masks = MaskSet({"w": conv.weight})
    hook = ReselectHook(masks, Reselect(Cubic(0.5, start=0, end=1, every=1, freeze_after_end=False), "magnitude", "global",
                                        feedback=True))
    hook.before_forward(1)  # past end, not frozen: re-selected at s_f = 0.5
    hook.before_optimizer_step(1)
    ours = masks.masks["w"].reshape(-1).tolist()
    assert ours == [False, True, False, False, True, True]
    for imp in ("L1", "L2"):
        scores = [ref_dpf.importance(conv.weight, imp)]
        assert ref_dpf.keep_above(scores, ref_dpf.weight_threshold(scores, 0.5))[0].tolist() == \
            [False, False, False, False, True, True]
        assert ref_dpf.keep_exact(scores, round((1 - 0.5) * 6))[0].tolist() == ours


# ------------------------------------------------------------------------------------------- planted differences


def test_planted_old_bug_select_zeroes_dense_weights_fails(monkeypatch):
    """The bug the issue reported: select_ applied the new mask to the weights, so at every update the
    dense weights of newly pruned entries became 0. The comparison must catch it at the first update."""
    select = MaskSet.select_

    def select_and_apply(self, *a, **k):
        stats = select(self, *a, **k)
        self.apply_()
        return stats

    monkeypatch.setattr(MaskSet, "select_", select_and_apply)
    steps = UPDATES[2] + 1
    trace, init = project_run(feedback=True, steps=steps)
    t = lockstep(trace, init, feedback=True, steps=steps)
    assert t.first_mismatch == UPDATES[0]  # the dense weights are zeroed at the first update already
    assert t.state_equal == UPDATES[0] and not t.all_equal


class _GateEarly(ref_dpf.InchonDPF):
    def due(self):  # one iteration early
        return (self.iterations + 2) % self.freq == 0 and (self.epoch + 1) <= self.milestones[1]


class _IntCount(ref_dpf.InchonDPF):
    def keep_count(self, rate, n):  # int instead of round
        return int((1.0 - rate) * n)


class _GreaterEqual(ref_dpf.InchonDPF):
    def select(self, rate):  # INCHEON's threshold with >= instead of >
        scores = self.scores()
        th = ref_dpf.weight_threshold(scores, rate)
        return [s >= th for s in scores]


@pytest.mark.parametrize("cls, switches, fails_at", [
    (_GateEarly, {}, UPDATES[0] - 1),  # 10: the early update
    (_IntCount, {}, UPDATES[0]),  # 11: (1 - s) N = 14,966.5...: int keeps one fewer
    (_GreaterEqual, {"exact_k": False}, UPDATES[2]),  # 35: the first update with frac(N s) >= 0.5
])
def test_planted_rule_changes_fail(dpf_trace, cls, switches, fails_at):
    t = lockstep(*dpf_trace, feedback=True, stop_at_first=True, cls=cls, **switches)
    assert t.first_mismatch == fails_at


# ------------------------------------------------------------------------------------------- Incremental


def test_incremental_equals_zhu_gupta_on_inchon_loop_at_every_step(incremental_trace):
    trace, init = incremental_trace
    t = lockstep(trace, init, feedback=False)
    assert t.first_mismatch is None and t.all_equal and t.max_abs_diff == 0.0, t
    assert [u.iteration for u in t.ref.updates] == UPDATES
    assert t.regrown_ref == t.regrown_project == 0  # nested: nothing comes back
    assert trace.steps[-1].density == t.ref.density()
    # nested and exact: every mask inside the previous one, each update at its cubic target
    for u, v in zip(UPDATES, UPDATES[1:]):
        assert all(bool((b <= a).all()) for a, b in zip(trace.steps[u].masks, trace.steps[v].masks))
    for u in UPDATES:
        rate = ref_dpf.cubic_rate(TARGET, u, END)
        assert sum(int(m.sum()) for m in trace.steps[u].masks) == round((1 - rate) * 16972)
    # the project zeroes pruned weights; the forward pass saw exactly 0 there (gradient masked from then on)
    assert all(bool((w[~m] == 0).all()) for w, m in zip(trace.steps[-1].seen, trace.steps[-1].masks))


def test_incremental_planted_regrowth_fails(incremental_trace):
    """Planted: the Incremental reference scored on the dense weights (DPF's rule with a masked gradient):
    pruned entries could come back. The comparison must fail."""

    class _Dense(ref_dpf.InchonDPF):
        def scores(self):
            return [ref_dpf.importance(c.weight, self.imp) for c in self.convs]

        def keep_count(self, rate, n):
            return round((1.0 - rate) * n)

    t = lockstep(*incremental_trace, feedback=False, stop_at_first=True, cls=_Dense)
    assert t.first_mismatch in UPDATES[1:]  # measured: 23, the second update already brings pruned entries back


# ------------------------------------------------------------------------------------------- One-shot P+FT


@pytest.fixture(scope="module")
def one_shot_run(tmp_path_factory):
    """The real OneShot procedure (harness.stage.run_spec on the dpf.yaml ci cell, shrunk: batch 8, 5 dense
    epochs with milestones 3/4, 3 fine-tuning epochs at the manifest's constant lr 0.002), recorded."""
    from harness.stage import run_spec
    from harness.config.load import load
    from harness.grid.expand import expand
    from harness.stage import Context
    from harness.paths import Paths

    from ..conftest import ROOT

    spec = next(s for s in expand(load(ROOT / "paper_configs" / "dpf.yaml", "ci"))
                if s.method == "one_shot" and s.seed == 0)
    t = spec.training
    spec = dataclasses.replace(
        spec, training=dataclasses.replace(t, batch_size=BATCH, pretrain="5ep",
                                           lr_schedule=dataclasses.replace(t.lr_schedule, milestones=("3ep", "4ep"))),
        params=dataclasses.replace(spec.params, finetune="3ep"),
        eval=dataclasses.replace(spec.eval, batch_size=32, train_examples=32, test_examples=32, every=None))
    data = _data()
    with pytest.MonkeyPatch.context() as mp, one_thread():
        stages = record_trainings(mp, data)
        rows = run_spec(spec, Context(paths=Paths(tmp_path_factory.mktemp("one_shot")), device="cpu"))
    return spec, rows, stages, data


@dataclass
class OneShotTally:
    dense_equal: int = 0
    mask_equal: bool = False
    finetune_equal: int = 0
    first_mismatch: str | None = None
    dense_weights: list | None = None
    ref: object = None


@one_thread()
def one_shot_lockstep(stages: list[TrainCall], data: DeviceData, cls=ref_dpf.OneShot, **switches) -> OneShotTally:
    dense, finetune = stages
    out = OneShotTally()
    model = tiny_resnet20(seed=0)
    model.load_state_dict(dense.init)  # the project's initialisation
    ref = out.ref = cls(model, lr=LR, momentum=MOMENTUM, weight_decay=WD, nesterov=True, milestones=(3, 4),
                        iters_per_epoch=SPE, **{"imp": "L1", "exact_k": True, **switches})
    stream = batch_stream(data, dense.seed, BATCH, False)
    for i in range(dense.steps):
        ref.dense_iteration(*next(stream))
        ok = all(torch.equal(dense.states[i][n], v) for n, v in _state(model).items())
        out.dense_equal += ok
        if not ok and out.first_mismatch is None:
            out.first_mismatch = f"dense step {i}"
    out.dense_weights = [m.weight.detach().clone() for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    ref.prune(TARGET, 0.002)
    out.mask_equal = all(torch.equal(a, b) for a, b in zip(finetune.masks, ref.masks()))
    if not out.mask_equal and out.first_mismatch is None:
        out.first_mismatch = "mask"
    stream = batch_stream(data, finetune.seed, BATCH, False)
    for i in range(finetune.steps):
        ref.finetune_iteration(*next(stream))
        ok = all(torch.equal(finetune.states[i][n], v) for n, v in _state(model, masked=True).items())
        out.finetune_equal += ok
        if not ok and out.first_mismatch is None:
            out.first_mismatch = f"fine-tuning step {i}"
    return out


def test_one_shot_equals_prune_once_then_finetune_at_every_step(one_shot_run):
    """Against the transcription (dense SGD steps, one global-magnitude pruning to 90 %, fine-tuning on the
    masked product with a fresh SGD at lr 0.002): all 60 dense steps and all 36 fine-tuning steps equal
    (every parameter and buffer, exactly), the mask equal, its 1,697 survivors exact."""
    spec, rows, stages, data = one_shot_run
    assert spec.target_sparsity == TARGET and spec.params.finetune_lr == 0.002 and spec.prunable == "conv_weights"
    opt = spec.training.optimizer
    assert (opt.name, opt.lr, opt.momentum, opt.nesterov, opt.weight_decay) == ("sgd", LR, MOMENTUM, True, WD)
    dense, finetune = stages
    assert (dense.steps, finetune.steps) == (5 * SPE, 3 * SPE) and finetune.lr == 0.002 and finetune.momentum == MOMENTUM
    assert rows[1]["index"] == 1 and rows[1]["density"] == 1697 / 16972
    t = one_shot_lockstep(stages, data)
    assert t.first_mismatch is None and (t.dense_equal, t.mask_equal, t.finetune_equal) == (60, True, 36)
    assert sum(int(m.sum()) for m in t.ref.masks()) == 1697 == round(0.1 * 16972)
    # dpf_exact_k on the one pruning step: INCHEON's rule keeps N - int(0.9 N) - 1 = 1,697 as well here
    scores = [ref_dpf.importance(w, "L1") for w in t.dense_weights]
    pure = ref_dpf.keep_above(scores, ref_dpf.weight_threshold(scores, TARGET))
    assert sum(int((torch.from_numpy(p.reshape(m.shape)) != m).sum()) for p, m in zip(pure, finetune.masks)) == 0


class _OneShotGreaterEqual(ref_dpf.OneShot):
    """Planted: the threshold rule with >= (keeps the threshold entry too: 1,698)."""

    def prune(self, rate, finetune_lr):
        super().prune(rate, finetune_lr)
        scores = [ref_dpf.importance(c.weight, self.imp) for c in self.convs]
        th = ref_dpf.weight_threshold(scores, rate)
        for c, s in zip(self.convs, scores):
            c.mask.copy_(torch.from_numpy((s >= th).reshape(tuple(c.mask.shape))).to(c.mask))


class _OneShotCarryOptimizer(ref_dpf.OneShot):
    """Planted: the dense optimiser (its momentum) carried into fine-tuning, only its LR changed."""

    def prune(self, rate, finetune_lr):
        kept = self.optimizer
        super().prune(rate, finetune_lr)
        for g in kept.param_groups:
            g["lr"] = finetune_lr
        self.optimizer = kept


@pytest.mark.parametrize("cls, fails_at", [(_OneShotGreaterEqual, "mask"),
                                           (_OneShotCarryOptimizer, "fine-tuning step 0")])
def test_one_shot_planted_differences_fail(one_shot_run, cls, fails_at):
    t = one_shot_lockstep(one_shot_run[2], one_shot_run[3], cls=cls)
    assert t.dense_equal == 60 and t.first_mismatch == fails_at
