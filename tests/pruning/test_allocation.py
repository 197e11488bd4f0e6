"""harness/pruning/allocation.py: the five LAMP-paper allocations on toy layers (lamp.md 2.3, 3, 11), exact top-k,
keep_top's ties, target rates, and ERK's dense-set boundary (a layer joins it only while S_l / U_l > 1: ``>=``
would make a layer at ratio exactly 1 dense)."""

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
    select,
    target_rate,
    uniform,
    uniform_plus,
)
from harness.pruning.schedules import Geometric
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


def prune(layers: list[Layer], score: str, allocation: str, rate: float) -> list[torch.Tensor]:
    """One nested round on bare layers: a weight-only score of the effective weights, then the allocation (what
    MaskSet.prune_ does on a model's tensors)."""
    return select(layers, [SCORES[score].per_layer(l.weight * l.mask) for l in layers], allocation, rate)


def mag_scores(layers: list[Layer]) -> list[torch.Tensor]:
    return [magnitude(l.weight * l.mask) for l in layers]


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
    rate = 0.9
    counts = erk(layers, mag_scores(layers), rate)
    T = (1 - rate) * sum(U)
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
        assert abs(survivors - Geometric(0.2, 20).density(k) * total) <= 0.001 * total, (k, survivors)
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


def test_target_amount() -> None:
    layers = make_layers([(10, 50), (10, 50)], seed=13)  # N = 1000
    layers = with_masks(layers, prune(layers, "magnitude", "global", 0.2))  # U = 800
    assert target_rate(layers, 0.5) == pytest.approx(1 - 500 / 800)
    assert target_rate(layers, 0.9) == 0.0  # never grows back
    a = target_rate(layers, 0.0)
    assert 0.0 <= a < 1.0
    for density, want in [(0.5, 500), (0.3333, 333), (0.0, 0)]:
        rate = target_rate(layers, density)
        for allocation in ("global", "erk"):
            masks = prune(layers, "magnitude", allocation, rate)
            assert abs(sum(int(m.sum()) for m in masks) - want) <= (0 if allocation == "global" else 1)


def _layer(name: str, shape: tuple[int, ...], unmasked: int) -> Layer:
    """A layer whose mask has exactly ``unmasked`` True entries (the first ones in flat order)."""
    numel = math.prod(shape)
    weight = torch.arange(1, numel + 1, dtype=torch.float32).reshape(shape)
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[:unmasked] = True
    return Layer(name, weight, mask.reshape(shape), numel)


def _erk(spec: list[tuple[tuple[int, ...], int]], rate: float) -> list[int]:
    layers = [_layer(f"l{i}", shape, u) for i, (shape, u) in enumerate(spec)]
    assert [l.unmasked for l in layers] == [u for _, u in spec]
    scores = [l.weight.abs() for l in layers]  # ERK ignores the scores
    return erk(layers, scores, rate)


def test_erk_ratio_exactly_one_stays_sparse() -> None:
    # U = [42, 5], e = [6+12, 12+6] = [18, 18], T = (1 - 0.8) * 47 = 9.4.
    # Round 1: S_l = round(9.4 * 18/36) = round(4.7) = 5 for both; ratios 5/42 ~ 0.12 and 5/5 = 1.
    # 1 is not > 1, so nobody turns dense: survivors [5, 5].
    # (With ">=": layer 1 turns dense, then S_0 = round(9.4 - 5) = round(4.4) = 4 -> [4, 5].)
    assert _erk([((6, 12), 42), ((12, 6), 5)], 0.8) == [5, 5]


def test_erk_ratio_just_above_one_turns_dense() -> None:
    # U = [55, 5], e = [18, 18], T = (1 - 0.8) * 60 = 12 (11.999999999999998 in floating point).
    # Round 1: S_l = round(12 * 18/36) = round(6) = 6 for both; ratios 6/55 ~ 0.11 and 6/5 = 1.2 > 1:
    # layer 1 joins the dense set and keeps its 5. Round 2: budget 12 - 5 = 7, S_0 = round(7) = 7,
    # ratio 7/55 < 1: stop. Survivors [7, 5] (sum 12 = T; without the dense step it would be [6, 6]).
    assert _erk([((6, 12), 55), ((12, 6), 5)], 0.8) == [7, 5]


def test_erk_ratio_just_below_one_stays_sparse() -> None:
    # U = [170, 20], e = [20+20, 20+20] = [40, 40], T = (1 - 0.8) * 190 = 38 (37.99999999999999).
    # Round 1: S_l = round(38 * 40/80) = round(19) = 19 for both; ratios 19/170 ~ 0.11 and
    # 19/20 = 0.95 < 1: nobody turns dense. Survivors [19, 19].
    # (Were layer 1 made dense, it would be [18, 20]: S_0 = round(38 - 20) = 18.)
    assert _erk([((20, 20), 170), ((20, 20), 20)], 0.8) == [19, 19]
