"""Lockstep: the project's dynamic sparse training (harness.pruning.methods.dynamic, driven by
harness.train.train) against transcriptions of the reference code, on ResNet-20 (option B) at width
1/4 with SGD (lr 0.2, momentum 0.9 Nesterov, weight decay 1e-4, dpf.yaml's recipe), batch 8 over 32
images (4 iterations per epoch), 24 iterations (6 epochs); the planted differences run 6.

* DSR: tests/reference/dsr_code.py (IntelAI/dynamic-reparameterization);
* Sparse Momentum: tests/reference/sparse_learning.py (TimDettmers/sparse_learning);
* SET-ITOP: tests/reference/itop_code.py (Shiweiliuiiiiiii/In-Time-Over-Parameterization).

Both sides start from the same weights and the same initial mask, see the same batches in the same
order (common.batch_stream) and, where the method draws random numbers, the same draws: the
project's hook and the transcription each get a torch.Generator seeded alike, and both make the
same calls in the same order (DSR: randint for the rounding discrepancy, randperm per layer; SET:
one torch.rand per layer). After every iteration the masks, the weights (DSR: the hidden dense
values), the momentum buffers of the prunable weights and every other parameter and buffer are
compared with ``torch.equal``: exact agreement. Each lockstep test has planted-difference companions
(one rule changed in a subclass of the transcription) that must make the comparison fail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch
from torch.nn import functional as F

from harness.pruning.masks import MaskSet, prunable_parameters
from harness.pruning.methods.dynamic import TIMING, DynamicParams
from harness.pruning.reallocation import CosineRate, ReallocationHook, erk_densities, initial_masks
from harness.pruning.schedules import Periodic
from harness.train import HookChain, StepHooks, train

from . import dsr_code, itop_code, sparse_learning
from .common import batch_stream, clone_model, tiny_data, tiny_resnet20

# the transcriptions step a cosine scheduler on a dummy optimizer, as the references do
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`:UserWarning")

DATA = tiny_data(n=32, n_test=16)
BATCH, DROP_LAST, SPE, STEPS, DATA_SEED = 8, False, 4, 24, 11
SHORT = 6  # planted differences: through the first re-allocation and two iterations after it
DENSITY = 0.1


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on two shared cores, two OpenMP threads made a step up to 20x slower
    (both sides of a comparison run with the same setting, so exactness does not depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _sgd(params):
    return torch.optim.SGD(params, lr=0.2, momentum=0.9, nesterov=True, weight_decay=1e-4)


def _shapes(model, convention="conv_weights") -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in prunable_parameters(model, convention).items()}


@dataclass
class Trace:
    """Per iteration: masks, prunable weights, their momentum, every other parameter and buffer."""

    masks: list[dict] = field(default_factory=list)
    weights: list[dict] = field(default_factory=list)
    momentum: list[dict] = field(default_factory=list)
    others: list[dict] = field(default_factory=list)

    def add(self, masks, weights, momentum, others) -> None:
        self.masks.append({n: m.detach().bool().clone() for n, m in masks.items()})
        self.weights.append({n: w.detach().clone() for n, w in weights.items()})
        self.momentum.append({n: b.detach().clone() for n, b in momentum.items()})
        self.others.append({n: t.detach().clone() for n, t in others.items()})

    def update_steps(self, initial: dict) -> list[int]:
        """0-based iterations after which the masks changed."""
        prev, out = initial, []
        for i, m in enumerate(self.masks):
            if any(not torch.equal(m[n], prev[n]) for n in m):
                out.append(i)
            prev = m
        return out


def _others(model, prunable: set[str]) -> dict:
    out = {n: p for n, p in model.named_parameters() if n not in prunable and "parametrizations" not in n}
    out.update({n: b for n, b in model.named_buffers() if "parametrizations" not in n})
    return out


def first_difference(a: Trace, b: Trace) -> str | None:
    """The first iteration and tensor where the two runs differ (None: equal at every iteration)."""
    assert len(a.masks) == len(b.masks) > 0
    for i in range(len(a.masks)):
        for what in ("masks", "weights", "momentum", "others"):
            x, y = getattr(a, what)[i], getattr(b, what)[i]
            assert x.keys() == y.keys(), what
            for n in x:
                if not torch.equal(x[n], y[n]):
                    return f"iteration {i}: {what} of {n} differ in {int((x[n] != y[n]).sum())} entries"
    return None


def mask_entries_differing(a: Trace, b: Trace, i: int) -> int:
    return sum(int((a.masks[i][n] != b.masks[i][n]).sum()) for n in a.masks[i])


# --------------------------------------------------------------------------- the project's side


def project_run(p: DynamicParams, model, init: dict, *, convention="conv_weights", every: int, stop: int | None = None,
                schedule=None, gen_seed: int = 0, density: float = DENSITY,
                steps: int = STEPS) -> tuple[Trace, ReallocationHook]:
    masks = MaskSet.for_model(model, convention)
    masks.set_masks_(init)
    periodic = Periodic(every=every, total=steps, target_density=density, stop=stop, timing=TIMING[p.regrow],
                        schedule=tuple(schedule or ()))
    hook = ReallocationHook(masks, p, schedule=periodic, generator=torch.Generator().manual_seed(gen_seed))
    opt = _sgd(model.parameters())
    hook.attach(model, opt)
    hook.start()
    trace = Trace()
    names = set(masks.params)

    class Record(StepHooks):
        def after_optimizer_step(self, step):
            trace.add(masks.masks, masks.params,
                      {n: opt.state[w]["momentum_buffer"] for n, w in masks.params.items()}, _others(model, names))

    train(model, DATA, steps=steps, optimizer=opt, scheduler=None, batch_size=BATCH, drop_last=DROP_LAST,
          seed=DATA_SEED, hooks=HookChain(hook, Record()))
    return trace, hook


def _batches(steps: int):
    return zip(range(steps), batch_stream(DATA, DATA_SEED, BATCH, DROP_LAST))


def _loss_backward(model, opt, x, y) -> None:
    model.train()
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()


# --------------------------------------------------------------------------- Sparse Momentum


def sm_reference(model, init: dict, cls=sparse_learning.SparseMomentum, last_epoch: int | None = None,
                 steps: int = STEPS):
    """sparse_learning's training loop (mnist_cifar/main.py:75-91, 264-277): mask.step() every
    iteration, at_end_of_epoch() after epochs 1 .. E-1 (and, to model the project's ``stop``, up to
    ``last_epoch``)."""
    params = {n: model.get_parameter(n) for n in init}
    opt = _sgd(model.parameters())
    ref = cls(params, opt, init, DENSITY, 0.5, t_max=steps)
    trace = Trace()
    for i, (x, y) in _batches(steps):
        _loss_backward(model, opt, x, y)
        ref.step()
        if (i + 1) % SPE == 0:
            epoch = (i + 1) // SPE
            if epoch < math.ceil(steps / SPE) and (last_epoch is None or epoch <= last_epoch):
                ref.at_end_of_epoch()
        trace.add(ref.masks, params, {n: opt.state[w]["momentum_buffer"] for n, w in params.items()},
                  _others(model, set(params)))
    return trace, ref


SM = DynamicParams(regrow="momentum", update_every="1ep", initial="uniform", prune_rate=0.5)


def _sm_start(seed=0, dense_layers=()):
    model = tiny_resnet20(seed)
    gen = torch.Generator().manual_seed(100 + seed)
    init = sparse_learning.initial_masks(_shapes(model), DENSITY, lambda shape: torch.rand(shape, generator=gen))
    for n in dense_layers:
        init[n] = torch.ones_like(init[n])
    return model, init


def _sm_pair(dense_layers=(), cls=sparse_learning.SparseMomentum, stop=None, last_epoch=None, steps=STEPS):
    model, init = _sm_start(dense_layers=dense_layers)
    ref_model = clone_model(model)
    mine, hook = project_run(SM if stop is None else DynamicParams(**{**SM.__dict__, "stop": f"{stop}it"}),
                             model, init, every=SPE, stop=stop, steps=steps)
    theirs, ref = sm_reference(ref_model, init, cls, last_epoch, steps)
    return mine, hook, theirs, ref, init


SHORTCUTS = ("layer2.0.shortcut.0.weight", "layer3.0.shortcut.0.weight")


def test_sparse_momentum_equals_sparse_learning_at_every_iteration():
    """Two dense 1x1 shortcuts in the initial mask: a full layer, whose regrowth share is capped at
    0.99 of its free slots and spills over to the other layers (core.py:461-497)."""
    mine, hook, theirs, ref, init = _sm_pair(dense_layers=SHORTCUTS)
    assert first_difference(mine, theirs) is None  # masks, weights, momentum, BN: 24/24 iterations exact
    # the first re-allocation follows iteration 3 (end of epoch 1), the last one epoch 5: none after the
    # last epoch (main.py:276); the iterations in between leave the masks alone
    assert mine.update_steps(init) == theirs.update_steps(init) == [3, 7, 11, 15, 19]
    assert hook.updates == len(ref.log) == 5 and [e["step"] for e in ref.log] == [4, 8, 12, 16, 20]
    assert ref.log[0]["rate"] == pytest.approx(0.005 + 0.495 * (1 + math.cos(math.pi * 4 / 24)) / 2, rel=1e-15)
    assert ref.log[0]["spilled"] and ref.log[0]["rounds"] > 1  # a full layer's share went round again
    # weights pruned and regrown in one update kept their values (the rule the issue found broken)
    assert sum(e["pruned_and_regrown"] for e in ref.log) > 0
    # the count is not held: it drifts toward the expected density * N (core.py:416-419)
    counts = [sum(int(m.sum()) for m in step.values()) for step in mine.masks]
    assert len(set(counts)) > 1


def test_sparse_momentum_stop_is_the_last_update():
    """The project's ``stop`` (no reference knob: the test loop stops calling at_end_of_epoch): the
    update at the end of epoch 2 is the last, none after it."""
    mine, hook, theirs, ref, init = _sm_pair(stop=2 * SPE, last_epoch=2)
    assert first_difference(mine, theirs) is None
    assert mine.update_steps(init) == [3, 7] and hook.updates == 2


class _RoundNotCeil(sparse_learning.SparseMomentum):
    def num_remove(self, rate, nonzeros):
        return round(rate * nonzeros)


class _CosinePerUpdate(sparse_learning.SparseMomentum):
    """The project's former rule: p * (1 + cos(pi u / U)) / 2 over the U updates, no floor."""

    def current_rate(self):
        return 0.5 * (1 + math.cos(math.pi * len(self.log) / 3)) / 2


class _ZeroRegrown(sparse_learning.SparseMomentum):
    def zero_regrown_weights(self, grown):
        for n, g in grown.items():
            self.params[n].data[g] = 0.0


@pytest.mark.parametrize("planted", [None, _RoundNotCeil, _CosinePerUpdate, _ZeroRegrown])
def test_sparse_momentum_planted_difference_fails(planted):
    """None: the control, the same short run with the faithful transcription agrees."""
    mine, _, theirs, ref, _ = _sm_pair(cls=planted or sparse_learning.SparseMomentum, steps=SHORT)
    assert len(ref.log) == 1
    if planted in (None, _ZeroRegrown):  # there are weights pruned and regrown in that update
        assert ref.log[0]["pruned_and_regrown"] > 0
    assert (first_difference(mine, theirs) is None) == (planted is None)


# --------------------------------------------------------------------------- DSR


DSR = DynamicParams(regrow="random", update_every="4it", initial="uniform", prune_fraction=0.05, threshold=0.02)


def dsr_reference(model, init: dict, n_prune_params: float, *, schedule, stop_epoch=1000, cls=dsr_code.DSR,
                  gen_seed=0, threshold=0.02, steps=STEPS):
    """DSR's training loop (main.py:474-481, 551-685): optimizer step, then a re-allocation when due."""
    ref = cls(model, list(init), init, n_prune_params, dsr_code.TorchDraws(torch.Generator().manual_seed(gen_seed)),
              threshold)
    opt = _sgd(model.parameters())
    trace = Trace()
    rewires = []
    for g, (x, y) in _batches(steps):
        _loss_backward(model, opt, x, y)
        opt.step()
        epoch = g // SPE
        if ref.due(g, epoch, dsr_code.schedule_value(schedule, epoch), stop_epoch):
            ref.rewire()
            rewires.append(g)
        s = {n: ref.s(n) for n in init}
        trace.add({n: ref.mask(n) for n in init}, s, {n: opt.state[w]["momentum_buffer"] for n, w in s.items()},
                  _others(model, set(init)))
    return trace, ref, rewires


def _dsr_pair(p=DSR, dense_layers=(), cls=dsr_code.DSR, schedule_ep=((0, 4),), stop_epoch=1000, steps=STEPS):
    model = tiny_resnet20(1)
    draws = dsr_code.TorchDraws(torch.Generator().manual_seed(200))
    init = dsr_code.initial_masks(_shapes(model), 1 - DENSITY, draws)
    for n in dense_layers:
        init[n] = torch.ones_like(init[n])
    ref_model = clone_model(model)
    active = sum(int(m.sum()) for m in init.values())
    schedule = [(e * SPE, every) for e, every in schedule_ep[1:]]
    mine, hook = project_run(p, model, init, every=schedule_ep[0][1], schedule=schedule,
                             stop=None if stop_epoch == 1000 else stop_epoch * SPE, steps=steps)
    theirs, ref, rewires = dsr_reference(ref_model, init, p.prune_fraction * active, schedule=list(schedule_ep),
                                         stop_epoch=stop_epoch, cls=cls, steps=steps)
    return mine, hook, theirs, ref, rewires, init


def test_dsr_equals_dynamic_reparameterization_at_every_iteration():
    shortcuts = ("layer2.0.shortcut.0.weight",)  # dense: it cannot regrow, its share goes round again
    mine, hook, theirs, ref, rewires, init = _dsr_pair(dense_layers=shortcuts)
    assert first_difference(mine, theirs) is None  # masks, hidden weights, momentum, BN: 24/24 exact
    # re-allocation after 0-based iterations 4, 8, ..., 20 (main.py:627), not after iteration 3
    assert rewires == [4, 8, 12, 16, 20] and hook.updates == 5
    assert mine.update_steps(init) == [4, 8, 12, 16, 20]
    assert hook.threshold == ref.threshold
    assert any(e["rounds"] > 1 for e in ref.log)  # a full layer: the growth loop ran a second round
    assert len({e["threshold"] for e in ref.log}) > 1  # the threshold adapted
    # the count moves only by what the growth loop over- or under-shoots (a negative rounding
    # discrepancy on a layer with a smaller count is clipped at 0, main.py:665)
    counts = [sum(int(m.sum()) for m in init.values())] + [sum(int(m.sum()) for m in mine.masks[g].values())
                                                           for g in rewires]
    assert [b - a for a, b in zip(counts, counts[1:])] == [e["grown"] - e["pruned"] for e in ref.log]


def test_dsr_period_schedule_and_stop_epoch():
    """rewire_period_schedule (period 4 in epochs 0-1, 8 from epoch 2) and --stop-rewire-epoch 3: the
    last re-allocation follows iteration 8, none in epoch 3."""
    p = DynamicParams(**{**DSR.__dict__, "stop": "3ep", "update_schedule": (("2ep", "8it"),)})
    mine, hook, theirs, ref, rewires, init = _dsr_pair(p, schedule_ep=((0, 4), (2, 8)), stop_epoch=3)
    assert first_difference(mine, theirs) is None
    assert rewires == [4, 8] and mine.update_steps(init) == [4, 8]


class _OffByOne(dsr_code.DSR):
    def due(self, iteration, epoch, period, stop_epoch):  # the project's former (t + 1) % P timing
        return (iteration + 1) % period == 0 and epoch < stop_epoch


class _KeepHiddenValues(dsr_code.DSR):
    def prune_threshold(self, n):  # regrown entries would start at their hidden values
        mask_flat = self.mask(n).view(-1)
        active = torch.nonzero(mask_flat > 0.5).view(-1)
        drop = (self.s(n).data.reshape(-1)[active].abs() < self.threshold).nonzero().view(-1)
        mask_flat[active[drop]] = 0
        return active[drop]


class _FloorCounts(dsr_code.DSR):
    def rewire(self):
        real = dsr_code.np.round
        dsr_code.np.round = dsr_code.np.floor
        try:
            super().rewire()
        finally:
            dsr_code.np.round = real


@pytest.mark.parametrize("planted", [None, _OffByOne, _KeepHiddenValues, _FloorCounts])
def test_dsr_planted_difference_fails(planted):
    mine, _, theirs, _, _, _ = _dsr_pair(cls=planted or dsr_code.DSR, steps=SHORT)
    assert (first_difference(mine, theirs) is None) == (planted is None)


# --------------------------------------------------------------------------- SET-ITOP


SET = DynamicParams(regrow="set", update_every="4it", initial="erk", prune_rate=0.5)
ITOP_DENSITY = 0.05


class _StopAfter(itop_code.SETITOP):
    """The project's ``stop`` (no ITOP knob): no truncation after iteration ``stop``."""

    stop = 8

    def truncate_weights(self):
        if self.steps <= self.stop:
            super().truncate_weights()


def itop_reference(model, init: dict, cls=itop_code.SETITOP, gen_seed=0, steps=STEPS):
    params = {n: model.get_parameter(n) for n in init}
    opt = _sgd(model.parameters())
    g = torch.Generator().manual_seed(gen_seed)
    ref = cls(params, opt, init, 0.5, t_max=steps, update_frequency=4,
              rand=lambda shape: torch.rand(shape, generator=g))
    trace = Trace()
    for _, (x, y) in _batches(steps):
        _loss_backward(model, opt, x, y)
        ref.step()
        trace.add(ref.masks, params, {n: opt.state[w]["momentum_buffer"] for n, w in params.items()},
                  _others(model, set(params)))
    return trace, ref


def _itop_pair(cls=itop_code.SETITOP, p=SET, stop=None, steps=STEPS):
    model = tiny_resnet20(2)
    shapes = _shapes(model, "conv_and_linear_weights")
    gen = torch.Generator().manual_seed(300)
    init = itop_code.initial_masks(shapes, itop_code.erk_densities(shapes, ITOP_DENSITY),
                                   lambda shape: torch.rand(shape, generator=gen))
    ref_model = clone_model(model)
    mine, hook = project_run(p, model, init, convention="conv_and_linear_weights", every=4, stop=stop,
                             density=ITOP_DENSITY, steps=steps)
    theirs, ref = itop_reference(ref_model, init, cls, steps=steps)
    return mine, hook, theirs, ref, init


def test_set_itop_equals_in_time_over_parameterization_at_every_iteration():
    mine, hook, theirs, ref, init = _itop_pair()
    assert first_difference(mine, theirs) is None  # masks, weights, masked momentum, BN: 24/24 exact
    # every 4 iterations, the last iteration included (core.py:219-221)
    assert mine.update_steps(init) == [3, 7, 11, 15, 19, 23] and hook.updates == len(ref.log) == 6
    assert all(e["grown"] > 0 for e in ref.log)
    counts = [sum(int(m.sum()) for m in step.values()) for step in mine.masks]
    assert len(set(counts)) > 1  # random growth is a Bernoulli draw per entry: the count moves


def test_set_itop_stop_is_the_last_update():
    mine, hook, theirs, ref, init = _itop_pair(cls=_StopAfter, p=DynamicParams(**{**SET.__dict__, "stop": "8it"}),
                                               stop=8)
    assert first_difference(mine, theirs) is None
    assert mine.update_steps(init) == [3, 7] and hook.updates == 2


class _KeepAtThreshold(itop_code.SETITOP):
    def keep_above(self, w, threshold):
        return torch.abs(w) >= threshold


class _MomentumNotMasked(itop_code.SETITOP):
    def apply_mask(self):
        with torch.no_grad():
            for n, p in self.params.items():
                p.data = p.data * self.masks[n]


class _DeathRatePerUpdate(itop_code.SETITOP):
    def current_rate(self):  # decayed per update (u = 0, 1, ...), no floor
        return 0.5 * (1 + math.cos(math.pi * len(self.log) / 4)) / 2


@pytest.mark.parametrize("planted", [None, _KeepAtThreshold, _MomentumNotMasked, _DeathRatePerUpdate])
def test_set_itop_planted_difference_fails(planted):
    mine, _, theirs, _, _ = _itop_pair(cls=planted or itop_code.SETITOP, steps=SHORT)
    assert (first_difference(mine, theirs) is None) == (planted is None)


# --------------------------------------------------------------------------- initial masks, schedules


@pytest.mark.parametrize("regrow", ["momentum", "random", "set"])
def test_initial_masks_equal_the_references_draws(regrow):
    """Given the same generator, the project's initial mask is the reference's; its distribution:
    DSR exact int(d n + 0.1) per layer, SM/SET Bernoulli(d) per entry (the count varies by seed)."""
    model = tiny_resnet20(0)
    convention = "conv_and_linear_weights" if regrow == "set" else "conv_weights"
    masks = MaskSet.for_model(model, convention)
    shapes = _shapes(model, convention)
    p = DynamicParams(regrow=regrow, update_every="1ep", initial="erk" if regrow == "set" else "uniform",
                      prune_fraction=0.05)
    totals = []
    for seed in range(20):
        mine = initial_masks(masks, p, DENSITY, torch.Generator().manual_seed(seed))
        g = torch.Generator().manual_seed(seed)
        if regrow == "random":
            theirs = dsr_code.initial_masks(shapes, 1 - DENSITY, dsr_code.TorchDraws(g))
            exact = {n: int(0.1 * math.prod(s) + 0.1) for n, s in shapes.items()}
            assert {n: int(m.sum()) for n, m in mine.items()} == exact
        elif regrow == "momentum":
            theirs = sparse_learning.initial_masks(shapes, DENSITY, lambda shape: torch.rand(shape, generator=g))
        else:
            theirs = itop_code.initial_masks(shapes, itop_code.erk_densities(shapes, DENSITY),
                                             lambda shape: torch.rand(shape, generator=g))
        assert all(torch.equal(mine[n], theirs[n]) for n in shapes)
        totals.append(sum(int(m.sum()) for m in mine.values()))
    n = sum(math.prod(s) for s in shapes.values())
    if regrow == "random":
        assert len(set(totals)) == 1
    else:  # Bernoulli: mean within 4 standard errors of d * N, and the count varies
        mean, sd = sum(totals) / len(totals), math.sqrt(n * DENSITY * (1 - DENSITY))
        assert abs(mean - DENSITY * n) < 4 * sd / math.sqrt(len(totals)) + 1 and len(set(totals)) > 1


@pytest.mark.parametrize("density", [0.01, 0.1, 0.5, 0.9])
def test_erk_densities_equal_itop(density):
    model = tiny_resnet20(0)
    shapes = _shapes(model, "conv_and_linear_weights")
    mine = erk_densities(list(shapes.values()), density)
    theirs = itop_code.erk_densities(shapes, density)
    assert mine == list(theirs.values())
    if density == 0.9:
        assert 1.0 in mine  # some layers had to be dense


def test_cosine_rate_is_torchs_cosine_annealing_bit_for_bit():
    total = 1000
    ref = sparse_learning.CosineDecay(0.5, total)
    rate = CosineRate(0.5, 0.005, total)
    for t in range(1, total + 1):
        ref.step()
        assert rate.at(t) == ref.rate()
    assert rate.at(total) == 0.005


# --------------------------------------------------------------------------- empty layers (a deviation)


EMPTY = "layer2.0.shortcut.0.weight"  # 32 entries: empty at 99 % sparsity under DSR's int(0.01 * 32 + 0.1)


def test_sparse_momentum_empty_layer_takes_no_share_where_sparse_learning_raises():
    """Deviation dynamic_empty_layers: a layer without active entries has a NaN momentum share;
    sparse_learning's math.ceil(NaN) raises, the project gives it share 0 (it can still get spilled
    regrowth) and carries on."""
    model, init = _sm_start()
    init[EMPTY] = torch.zeros_like(init[EMPTY])
    ref_model = clone_model(model)
    mine, hook = project_run(SM, model, init, every=SPE, steps=SHORT)
    assert hook.updates == 1
    with pytest.raises(ValueError, match="NaN"):
        sm_reference(ref_model, init, steps=SHORT)


def test_dsr_empty_layer_takes_no_share_where_the_reference_counts_go_nan():
    """Deviation dynamic_empty_layers: DSR's mean pruned fraction is 0 / 0 = NaN with an empty layer and
    every regrowth count becomes NaN cast to int32 (here numpy 2 then refuses the discrepancy's
    out-of-range sum; the reference's numpy 1.15 carries on with meaningless counts); the project
    leaves the empty layer out of the mean and holds the count."""
    model = tiny_resnet20(1)
    init = dsr_code.initial_masks(_shapes(model), 1 - DENSITY, dsr_code.TorchDraws(torch.Generator().manual_seed(200)))
    init[EMPTY] = torch.zeros_like(init[EMPTY])
    active = sum(int(m.sum()) for m in init.values())
    ref_model = clone_model(model)
    mine, hook = project_run(DSR, model, init, every=4, steps=SHORT)
    assert hook.updates == 1 and mine.update_steps(init) == [4]
    assert sum(int(m.sum()) for m in mine.masks[-1].values()) == active and not mine.masks[-1][EMPTY].any()
    with pytest.warns(RuntimeWarning), pytest.raises(OverflowError):
        dsr_reference(ref_model, init, DSR.prune_fraction * active, schedule=[(0, 4)], steps=SHORT)
