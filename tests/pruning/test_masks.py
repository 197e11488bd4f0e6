"""harness/pruning/masks.py: score-ranked selection (nested or over all entries, with regrowth counted), with
scores that need data, LAMP's masks against the released code's mechanism (torch.nn.utils.prune), and the score
catalog against its implementations."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from harness.pruning import catalog, scores
from harness.pruning.allocation import ALLOCATIONS
from harness.pruning.masks import MaskSet
from harness.pruning.methods import METHODS


def _toy_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))


# ------------------------------------------------------------------ LAMP's five rules vs the released code


@pytest.mark.parametrize("method", ["global", "uniform", "uniform_plus", "erk", "lamp"])
def test_masks_equal_torch_prune_round_for_round(method):
    """The released LAMP code prunes each layer with ``torch.nn.utils.prune.l1_unstructured``
    (smallest |w| among the remaining entries go) after its rule sets the per-layer counts. Our
    score-ranked selection must give exactly the same masks, round after round."""
    ours = _toy_cnn(3)
    ref = copy.deepcopy(ours)
    masks = MaskSet.for_model(ours, "conv_and_linear_weights")
    ref_modules = [m for m in ref if isinstance(m, (nn.Conv2d, nn.Linear))]
    m = METHODS[method]
    for k in range(1, 13):  # 6.9% remaining (Uniform+ runs out of middle-layer weights later on this toy)
        before = {n: int(v.sum()) for n, v in masks}
        masks.prune_(m.score, m.allocation, 0.2)
        for (name, mask), module in zip(masks, ref_modules):
            removed = before[name] - int(mask.sum())
            torch_prune.l1_unstructured(module, "weight", amount=removed)
            assert torch.equal(module.weight_mask.bool(), mask), (method, k, name)
    assert masks.density() == pytest.approx(0.8 ** 12, rel=0.02)


# ------------------------------------------------------------------ selection: ranking, regrowth


def test_selection_over_all_entries_regrows_and_hits_the_density_exactly():
    model = _toy_cnn(1)
    masks = MaskSet.for_model(model, "conv_and_linear_weights")
    total = sum(p.numel() for p in masks.params.values())
    dense = {n: p.detach().clone() for n, p in masks.params.items()}
    stats = masks.select_(scores.compute("magnitude", masks.score_inputs()), "global", density=0.3)
    assert stats == {"pruned": total - round(0.3 * total), "regrown": 0}
    assert sum(int(v.sum()) for _, v in masks) == round(0.3 * total)
    # nested selection can only shrink, whatever the score says
    flipped = [-s for s in scores.compute("magnitude", masks.score_inputs())]
    stats = masks.select_(flipped, "global", density=0.2)
    assert stats["regrown"] == 0 and sum(int(v.sum()) for _, v in masks) == round(0.2 * total)
    # over all entries (DPF-style, scored on the dense weights), pruned entries come back
    for n, p in masks.params.items():
        p.data.copy_(dense[n])
    old = {n: v.clone() for n, v in masks}
    inverse = [1.0 / (p.detach().abs() + 1e-3) for p in masks.params.values()]  # prefers the pruned ones
    stats = masks.select_(inverse, "global", density=0.2, eligible="all")
    regrown = sum(int((v & ~old[n]).sum()) for n, v in masks)
    assert stats["regrown"] == regrown > 0
    assert stats["pruned"] == sum(int((old[n] & ~v).sum()) for n, v in masks) == regrown  # same density
    assert sum(int(v.sum()) for _, v in masks) == round(0.2 * total)


def test_within_a_layer_the_score_not_the_magnitude_decides():
    model = nn.Sequential(nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[4.0, 3.0, 2.0, 1.0], [0.5, 0.4, 0.3, 0.2]]))
    masks = MaskSet.for_model(model, "conv_and_linear_weights")
    score = torch.tensor([[0.0, 1.0, 2.0, 3.0], [7.0, 6.0, 5.0, 4.0]])
    masks.select_([score], "uniform", rate=0.5)
    # magnitude would keep the first row; the score keeps the second
    assert masks.masks["0.weight"].tolist() == [[False, False, False, False], [True, True, True, True]]


# ------------------------------------------------------------------ scores that need data


def test_snip_equals_abs_gradient_times_weight_on_a_hand_made_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2, bias=True))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]))
        model[0].bias.zero_()
    x = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    y = torch.tensor([0, 1])
    masks = MaskSet.for_model(model, "conv_and_linear_weights")
    loss = nn.functional.cross_entropy
    inputs = masks.score_inputs(model, batches=lambda: iter([(x[:1], y[:1]), (x[1:], y[1:])]), loss=loss)
    (got,) = scores.compute("snip", inputs)
    # by hand: d/dW of sum over the two batches of CE(Wx + b): (softmax(Wx) - onehot(y)) x^T per example
    w = model[0].weight.detach()
    grad = torch.zeros_like(w)
    for xi, yi in zip(x, y):
        p = torch.softmax(w @ xi, 0)
        p[yi] -= 1
        grad += torch.outer(p, xi)
    assert torch.allclose(got, (grad * w).abs(), atol=1e-6)
    assert got[1, 0] == 0  # a zero weight has zero saliency
    with pytest.raises(ValueError, match="needs batches"):
        scores.compute("snip", masks.score_inputs(model))


def test_every_registered_score_declares_known_needs():
    assert scores.SCORES["magnitude"].needs == scores.WEIGHTS_ONLY
    assert scores.SCORES["snip"].needs == {"batches", "gradients"} and scores.SCORES["synflow"].needs == {"model"}
    for s in scores.SCORES.values():
        assert s.needs <= catalog.NEEDS
    assert set(ALLOCATIONS) == {"global", "global_filters", "uniform", "uniform_plus", "erk"}
    # the torch-free catalog and the implementations name the same entries
    assert set(scores.SCORES) == set(catalog.SCORES) and set(ALLOCATIONS) == set(catalog.ALLOCATIONS)
