"""harness/pruning/pai.py: choosing a mask at initialisation: iterative SNIP re-scores every entry, ERK Bernoulli
draws, a round's batches (replayed or fresh), and PAGS keeps the candidate with the largest distance."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from harness.models.build import build_model
from harness.pruning.masks import MaskSet
from harness.pruning import pai
from harness.pruning.methods.at_init import AtInitParams
from tests.reference.common import choose_at_init
from harness.config.schema import GraphParams
from harness.pruning import graph

from tests.tiny import FLAT_MEAN, FLAT_STD, images


def flat(n: int = 64, seed: int = 0):
    return images(n, seed, FLAT_MEAN, FLAT_STD, "reflect")


def test_iterative_snip_rescores_every_entry_and_ends_exactly_at_the_density():
    torch.manual_seed(2)
    model = build_model("resnet20_cifar_optb", 10, 0.25)
    masks = MaskSet.for_model(model, "conv_and_linear_weights")
    seen = []

    real = masks.select_

    def select_(s, allocation, **kw):
        seen.append(kw["density"])
        assert kw["eligible"] == "all"
        return real(s, allocation, **kw)

    masks.select_ = select_

    class Spec:
        params = AtInitParams(batches=1, mode="eval", rounds=4)
        training = type("T", (), {"batch_size": 16, "drop_last": True})
        score, allocation, target_sparsity = "snip", "global", 0.9

    choose_at_init(Spec, model, masks, flat(), torch.Generator().manual_seed(0))
    assert seen == pytest.approx([0.1 ** (r / 4) for r in range(1, 5)])
    total = sum(m.numel() for _, m in masks)
    assert sum(int(m.sum()) for _, m in masks) == round(0.1 * total)
    assert all(bool((p[~masks.masks[n]] == 0).all()) for n, p in masks.params.items())
    assert model.training  # the model goes back to train mode after eval-mode scoring


def test_erk_bernoulli_realised_density_and_fresh_draws():
    torch.manual_seed(3)
    model = build_model("vgg16_bn_fc1_lamp", 10, 0.5)
    masks = MaskSet.for_model(model, "conv_and_linear_weights")

    class Spec:
        params = AtInitParams(draw="bernoulli")
        training = None
        score, allocation, target_sparsity = "random", "erk", 0.9

    choose_at_init(Spec, model, masks, None, torch.Generator().manual_seed(0))
    assert masks.density() == pytest.approx(0.1, abs=0.005)
    assert masks.density() != round(0.1 * sum(m.numel() for _, m in masks)) / sum(m.numel() for _, m in masks)
    first = {n: m.clone() for n, m in masks}
    choose_at_init(Spec, model, masks, None, torch.Generator().manual_seed(1))
    assert not all(torch.equal(first[n], m) for n, m in masks)
    layer = masks.layer_density()
    assert max(layer.values()) > 2 * min(layer.values())  # ERK: small layers denser than big ones


def test_a_rounds_batches_replay_with_n_batches_and_are_fresh_for_full_passes():
    """GraSP's two passes of one round: ``batches: n`` replays the same mini-batches (drawn once: the generator
    moves as for one draw); ``null`` draws a fresh pass each time (the code iterates its shuffling loader twice)."""
    data = flat(48)

    def draw(g):
        return (b for _, b in zip(range(2), data.train_batches(g, 16, True)))

    gen = torch.Generator().manual_seed(0)
    batches = pai._round_batches(draw, gen, replay=True)
    first, second = list(batches()), list(batches())
    assert all(torch.equal(x, y) and torch.equal(a, b) for (x, a), (y, b) in zip(first, second))
    once = torch.Generator().manual_seed(0)
    assert [torch.equal(x, y) for (x, _), (y, _) in zip(first, draw(once))] == [True, True]
    assert torch.equal(gen.get_state(), once.get_state())
    gen = torch.Generator().manual_seed(0)
    batches = pai._round_batches(draw, gen, replay=False)
    first, second = list(batches()), list(batches())
    assert not torch.equal(first[0][0], second[0][0])


class _Spec:
    training = type("T", (), {"batch_size": 16, "drop_last": True})
    allocation, target_sparsity = "global", 0.9

    def __init__(self, score, params):
        self.score, self.params = score, params


@pytest.mark.parametrize("score, draw", [("snip", "topk"), ("random", "topk"), ("random", "bernoulli")])
def test_the_trained_mask_is_the_argmax_of_the_candidate_distances(score, draw):
    torch.manual_seed(0)
    model = build_model("resnet34_tv_imagenet_stem", 10, 0.25, "iclr23")
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = MaskSet.for_model(model, "conv_and_linear_weights")
    params = AtInitParams(mode="eval", candidates=5, draw=draw, graph=GraphParams(min_edges=100))
    info = choose_at_init(_Spec(score, params), model, masks, flat(96), torch.Generator().manual_seed(1))
    d = info["pags_distances"]
    assert len(d) == 5 and len(set(d)) == 5  # five different candidates
    assert info["pags_chosen"] == max(range(5), key=d.__getitem__)
    weights = {n: theta0[n] for n in masks.params}
    assert graph.distance(weights, masks.masks, params=params.graph) == pytest.approx(max(d), rel=1e-9)
    for n, p in model.named_parameters():  # theta_0 * m: unmasked entries untouched, BN and biases too
        if n in masks.masks:
            assert torch.equal(p.detach(), theta0[n] * masks.masks[n])
        else:
            assert torch.equal(p.detach(), theta0[n])
    total = sum(m.numel() for _, m in masks)
    kept = sum(int(m.sum()) for _, m in masks)
    if draw == "topk":
        assert kept == round(0.1 * total)
    else:
        assert kept / total == pytest.approx(0.1, abs=0.005)
    prunable = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert set(masks.masks) == prunable  # no BN, no bias
