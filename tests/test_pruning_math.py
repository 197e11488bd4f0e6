"""Pruning math: LAMP scores, the five LAMP-paper allocations, schedules (lamp.md sections 2, 3, 11;
dpf.md section 1.3). Tiny toy layers only; runs in seconds on CPU."""

from __future__ import annotations

import math

import pytest
import torch

from harness.pruning.allocation import (
    ALLOCATIONS,
    AllocationError,
    Layer,
    erk,
    global_,
    keep_top,
    prune,
    target_amount,
    uniform,
    uniform_plus,
)
from harness.pruning.schedules import cubic_sparsity, geometric_density
from harness.pruning.scores import SCORES, lamp, magnitude

Shape = tuple[int, ...]

# A small CNN-like stack: 4-D first conv, middle convs + a hidden FC, 2-D last layer (total 61,912).
TOY_SHAPES: list[Shape] = [(8, 3, 3, 3), (16, 8, 3, 3), (32, 16, 3, 3), (64, 32, 3, 3), (64, 64, 3, 3), (10, 64)]

# (score, allocation) for the five methods of lamp.md section 3.
METHODS: dict[str, tuple[str, str]] = {
    "glob": ("magnitude", "global"),
    "lamp": ("lamp", "global"),
    "unif": ("magnitude", "uniform"),
    "unifplus": ("magnitude", "uniform_plus"),
    "erk": ("magnitude", "erk"),
}


def make_layers(shapes: list[Shape], seed: int = 0) -> list[Layer]:
    torch.manual_seed(seed)
    layers = []
    for i, shape in enumerate(shapes):
        w = torch.randn(shape)
        layers.append(Layer(f"l{i}", w, torch.ones(shape, dtype=torch.bool), w.numel()))
    return layers


def with_masks(layers: list[Layer], masks: list[torch.Tensor]) -> list[Layer]:
    return [Layer(l.name, l.weight, m, l.original_numel) for l, m in zip(layers, masks)]


def mag_scores(layers: list[Layer]) -> list[torch.Tensor]:
    return [magnitude(l.weight * l.mask) for l in layers]


# ---------------------------------------------------------------- scores (lamp.md 2.2)


def test_lamp_hand_computed() -> None:
    # s = [9, 1, 4, 0]; ascending 0, 1, 4, 9; suffix sums 14, 14, 13, 9.
    out = lamp(torch.tensor([3.0, -1.0, 2.0, 0.0]))
    assert out.dtype == torch.float64
    assert torch.equal(out, torch.tensor([1.0, 1.0 / 14.0, 4.0 / 13.0, 0.0], dtype=torch.float64))
    # same values, 2-D layout: positions preserved
    out2 = lamp(torch.tensor([[0.0, 2.0], [-1.0, 3.0]]))
    assert torch.equal(out2, torch.tensor([[0.0, 4.0 / 13.0], [1.0 / 14.0, 1.0]], dtype=torch.float64))


def test_lamp_properties() -> None:
    torch.manual_seed(1)
    for shape in [(7,), (5, 9), (4, 3, 3, 3)]:
        w = torch.randn(shape)
        w[torch.rand(shape) < 0.3] = 0.0  # pruned entries
        s = lamp(w)
        assert s.shape == w.shape
        assert s.max().item() == 1.0
        assert s.reshape(-1)[w.abs().reshape(-1).argmax()].item() == 1.0
        assert torch.all(s[w == 0] == 0)
        order = torch.argsort(w.abs().reshape(-1), stable=True)
        assert torch.all(torch.diff(s.reshape(-1)[order]) >= 0)  # monotone in |w| within a layer
    assert torch.equal(lamp(torch.zeros(3, 2)), torch.zeros(3, 2, dtype=torch.float64))  # 0/0 -> 0
    assert lamp(torch.zeros(0)).numel() == 0
    # ties: lower index gets the larger score (consistent with keep_top's tie-break)
    assert torch.equal(lamp(torch.tensor([2.0, 2.0])), torch.tensor([1.0, 0.5], dtype=torch.float64))
    assert SCORES["lamp"].per_layer is lamp and SCORES["magnitude"].per_layer is magnitude


# ---------------------------------------------------------------- allocations (lamp.md 2.3, 3)


def test_global_exact_topk() -> None:
    layers = make_layers([(6, 4, 3, 3), (20, 30), (10, 20)], seed=2)
    torch.manual_seed(3)
    masks = [torch.rand(l.weight.shape) > 0.25 for l in layers]  # some large |w| are masked
    layers = with_masks(layers, masks)
    raw = [l.weight.abs() for l in layers]  # deliberately unmasked scores: masked entries must still be skipped
    U = sum(l.unmasked for l in layers)
    K = round(U * 0.8)
    counts = global_(layers, raw, 0.2)
    assert sum(counts) == K
    assert all(0 <= c <= l.unmasked for c, l in zip(counts, layers))
    concat = torch.cat([torch.where(l.mask, l.weight.abs(), -math.inf).reshape(-1) for l in layers])
    top = torch.zeros(concat.numel(), dtype=torch.bool)
    top[torch.topk(concat, K).indices] = True
    sizes = [l.weight.numel() for l in layers]
    assert counts == [int(t.sum()) for t in top.split(sizes)]
    # the full pipeline reproduces exactly the global top-K set
    new = prune(layers, "magnitude", "global", 0.2)
    assert torch.equal(torch.cat([m.reshape(-1) for m in new]), top)


def test_uniform_per_layer() -> None:
    layers = make_layers(TOY_SHAPES, seed=4)
    counts = uniform(layers, mag_scores(layers), 0.2)
    assert counts == [l.unmasked - round(0.2 * l.unmasked) for l in layers]
    masks = prune(layers, "magnitude", "uniform", 0.2)
    assert [int(m.sum()) for m in masks] == counts


def test_uniform_plus_one_round() -> None:
    layers = make_layers(TOY_SHAPES, seed=5)
    U = [l.unmasked for l in layers]
    counts = uniform_plus(layers, mag_scores(layers), 0.2)
    assert counts[0] == U[0]  # first 4-D conv kept dense
    T = round(0.2 * sum(U))
    f = T / sum(U[1:])
    assert f > 0.2
    assert counts[1:] == [u - round(f * u) for u in U[1:]]  # each layer removes round(f * U_l)
    # total survivors == U - round(0.2 U), up to the per-layer rounding of the released code
    assert abs(sum(counts) - (sum(U) - T)) <= (len(U) - 1) / 2


def test_uniform_plus_first_layer_not_conv() -> None:
    layers = make_layers([(50, 20), (40, 50), (10, 40)], seed=6)
    counts = uniform_plus(layers, mag_scores(layers), 0.2)
    U = [l.unmasked for l in layers]
    f = round(0.2 * sum(U)) / sum(U)
    assert counts == [u - round(f * u) for u in U]


def test_uniform_plus_twenty_rounds_floor() -> None:
    layers = make_layers(TOY_SHAPES, seed=7)
    n_first, n_last = layers[0].original_numel, layers[-1].original_numel
    floor = round(0.2 * n_last)
    floor_hit = 0
    for _ in range(20):
        layers = with_masks(layers, prune(layers, "magnitude", "uniform_plus", 0.2))
        assert layers[0].unmasked == n_first
        assert layers[-1].unmasked >= floor
        floor_hit += layers[-1].unmasked == floor
    assert floor_hit >= 5  # the floor branch really ran (last layer reaches 20 % after ~8 rounds)


def test_uniform_plus_errors() -> None:
    # f > 1: the dense first conv holds almost all the weights
    layers = make_layers([(64, 64, 3, 3), (10, 10)], seed=8)
    with pytest.raises(AllocationError, match="f = .* > 1"):
        uniform_plus(layers, mag_scores(layers), 0.5)
    # f_mid > 1: last layer held at its floor, tiny middle layer cannot absorb the rest
    layers = make_layers([(4, 3, 3, 3), (2, 5), (10, 100)], seed=8)
    with pytest.raises(AllocationError, match="f_mid"):
        uniform_plus(layers, mag_scores(layers), 0.9)
    assert issubclass(AllocationError, ValueError)


ERK_SHAPES: list[Shape] = [(4, 4), (32, 16, 3, 3), (64, 32, 3, 3), (128, 64), (10, 64)]


def test_erk_proportional_outside_dense_set() -> None:
    layers = make_layers(ERK_SHAPES, seed=9)
    U = [l.unmasked for l in layers]
    e = [float(sum(s)) for s in ERK_SHAPES]
    amount = 0.9
    counts = erk(layers, mag_scores(layers), amount)
    T = (1 - amount) * sum(U)
    # the 4x4 layer would get T*8/430 ~ 59 > 16 survivors: it goes dense, the rest share T - 16
    assert counts[0] == U[0] == 16
    free = range(1, len(U))
    budget = T - U[0]
    e_free = sum(e[i] for i in free)
    for i in free:
        assert counts[i] < U[i]
        assert abs(counts[i] - budget * e[i] / e_free) <= 0.5 + 1e-9
        # survivors / e_l is the same constant within +-1 survivor
        assert abs(counts[i] / e[i] - counts[1] / e[1]) * e[i] <= 1.0 + e[i] / e[1]
    assert abs(sum(counts) - round(T)) <= len(U)


def test_erk_iterative_dense_set() -> None:
    layers = make_layers(ERK_SHAPES, seed=10)
    U = [l.unmasked for l in layers]  # 16, 4608, 18432, 8192, 640
    counts = erk(layers, mag_scores(layers), 0.2)
    # T = 25510.4; in turn 4x4, 10x64, 128x64 and the 4,608 conv overflow; the big conv absorbs the rest
    assert counts[:2] == U[:2] and counts[3:] == U[3:]
    assert counts[2] == round(0.8 * sum(U) - (U[0] + U[1] + U[3] + U[4])) == 12054
    # recomputed against the *current* survivor budget after masking
    layers = with_masks(layers, prune(layers, "magnitude", "erk", 0.2))
    counts2 = erk(layers, mag_scores(layers), 0.2)
    assert abs(sum(counts2) - 0.8 * sum(counts)) <= len(U)


# ---------------------------------------------------------------- pipeline, 20 rounds (lamp.md 11)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_twenty_rounds(method: str) -> None:
    score, allocation = METHODS[method]
    layers = make_layers(TOY_SHAPES, seed=11)
    total = sum(l.original_numel for l in layers)
    for k in range(1, 21):
        old = [l.mask for l in layers]
        new = prune(layers, score, allocation, 0.2)
        for o, m in zip(old, new):
            assert m.dtype == torch.bool and m.shape == o.shape
            assert not torch.any(m & ~o)  # nested: a pruned entry never comes back
        layers = with_masks(layers, new)
        survivors = sum(l.unmasked for l in layers)
        assert abs(survivors - geometric_density(0.2, k) * total) <= 0.001 * total, (k, survivors)
        # pruned entries are the smallest |w| among the previously unmasked ones of each layer
        for o, l in zip(old, layers):
            kept, dropped = l.weight[l.mask].abs(), l.weight[o & ~l.mask].abs()
            if kept.numel() and dropped.numel():
                assert kept.min() >= dropped.max()
        if method == "lamp":
            assert all(l.unmasked >= 1 for l in layers)
            for l in layers:
                assert lamp(l.weight * l.mask).max().item() == 1.0


def test_prune_validation() -> None:
    layers = make_layers([(3, 4)], seed=12)
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError):
            prune(layers, "magnitude", "global", bad)
    with pytest.raises(ValueError):
        prune(layers, "nope", "global", 0.2)
    with pytest.raises(ValueError):
        prune(layers, "magnitude", "nope", 0.2)
    assert set(ALLOCATIONS) == {"global", "global_filters", "uniform", "uniform_plus", "erk"}
    assert [int(m.sum()) for m in prune(layers, "lamp", "global", 0.0)] == [12]


def test_keep_top() -> None:
    w = torch.tensor([[0.5, -3.0, 1.0], [2.0, -1.0, 0.1]])
    mask = torch.tensor([[True, False, True], [True, True, True]])
    assert torch.equal(keep_top(w.abs(), mask, 2), torch.tensor([[False, False, True], [True, False, False]]))
    assert torch.equal(keep_top(w.abs(), mask, 3), torch.tensor([[False, False, True], [True, True, False]]))
    # the score decides, not |w|: a score that prefers small weights keeps them
    assert torch.equal(keep_top(-w.abs(), mask, 2), torch.tensor([[True, False, False], [False, False, True]]))
    assert not keep_top(w, mask, 0).any()
    assert torch.equal(keep_top(w, mask, 5), mask)
    # ties go to the lower index
    assert torch.equal(keep_top(torch.ones(4), torch.ones(4, dtype=torch.bool), 2), torch.tensor([True, True, False, False]))
    with pytest.raises(ValueError):
        keep_top(w, mask, 6)


# ---------------------------------------------------------------- schedules (lamp.md 2.4, dpf.md 1.3)


def test_schedules() -> None:
    assert geometric_density(0.2, 0) == 1.0
    assert geometric_density(0.2, 3) == pytest.approx(0.512)
    assert cubic_sparsity(-5, 0.9, 0, 100) == 0.0
    assert cubic_sparsity(0, 0.9, 0, 100) == 0.0
    assert cubic_sparsity(50, 0.9, 0, 100) == pytest.approx(0.9 * (1 - 0.5**3))  # 0.7875
    assert cubic_sparsity(100, 0.9, 0, 100) == 0.9
    assert cubic_sparsity(10**6, 0.9, 0, 100) == 0.9
    assert cubic_sparsity(5, 0.9, 10, 30, initial_sparsity=0.5) == 0.5
    assert cubic_sparsity(20, 0.9, 10, 30, initial_sparsity=0.5) == pytest.approx(0.9 - 0.4 / 8)
    values = [cubic_sparsity(t, 0.9, 0, 100) for t in range(101)]
    assert all(b >= a for a, b in zip(values, values[1:]))


def test_target_amount() -> None:
    layers = make_layers([(10, 50), (10, 50)], seed=13)  # N = 1000
    layers = with_masks(layers, prune(layers, "magnitude", "global", 0.2))  # U = 800
    assert target_amount(layers, 0.5) == pytest.approx(1 - 500 / 800)
    assert target_amount(layers, 0.9) == 0.0  # never grows back
    a = target_amount(layers, 0.0)
    assert 0.0 <= a < 1.0
    for density, want in [(0.5, 500), (0.3333, 333), (0.0, 0)]:
        amount = target_amount(layers, density)
        for allocation in ("global", "erk"):
            masks = prune(layers, "magnitude", allocation, amount)
            assert abs(sum(int(m.sum()) for m in masks) - want) <= (0 if allocation == "global" else 1)
