"""Invariants of masks inside real training on a tiny model: the properties every procedure
relies on (pruned weights stay zero, densities follow 0.8^k, gradual pruning reaches its
target without regrowth)."""

from __future__ import annotations

import pytest
import torch

from harness.data import DeviceData
from harness.pruning.masks import MaskHook
from harness.pruning.methods.gradual import CubicMaskHook
from harness.models import build_model
from harness.pruning.masks import MaskSet, prunable_parameters
from harness.pruning.methods import METHODS
from harness.train import make_optimizer, train
from harness.config import OptimizerConfig

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
LAMP_METHODS = ["global", "uniform", "uniform_plus", "erk", "lamp"]


def _vgg(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("vgg16_bn_fc1_lamp", 10, 0.125)


def _synthetic_data(n: int = 64) -> DeviceData:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DeviceData(x, y, x[:16], y[:16], CIFAR_MEAN, CIFAR_STD, 4, "zeros", True)


def test_prunable_sets():
    m = _vgg()
    assert len(prunable_parameters(m, "conv_and_linear_weights")) == 14
    assert len(prunable_parameters(m, "conv_weights")) == 13
    everything = prunable_parameters(m, "all_weights")
    assert len(everything) == 14 + 13  # plus the BN gammas
    with pytest.raises(ValueError, match="unknown prunable convention"):
        prunable_parameters(m, "biases")


@pytest.mark.parametrize("method", LAMP_METHODS)
def test_twenty_rounds_follow_the_geometric_grid(method):
    """The sheet's pruning-only CI check (lamp.md §11), through MaskSet on the ci model."""
    model = _vgg()
    masks = MaskSet.for_model(model, "conv_and_linear_weights")
    total = sum(p.numel() for p in masks.params.values())
    spec = METHODS[method]
    first, last = list(masks.params)[0], list(masks.params)[-1]
    for k in range(1, 21):
        before = {n: m.clone() for n, m in masks}
        masks.prune_(spec.score, spec.allocation, 0.2)
        kept = sum(int(m.sum()) for _, m in masks)
        assert abs(kept - 0.8 ** k * total) <= 0.001 * total, (k, kept)
        for n, m in masks:
            assert not (m & ~before[n]).any()  # nested: nothing comes back
            assert (masks.params[n][~m] == 0).all()  # applied to the weights
        if method == "lamp":
            assert all(int(m.sum()) >= 1 for _, m in masks)
        if method == "uniform_plus":
            assert bool(masks.masks[first].all())
            assert int(masks.masks[last].sum()) >= round(0.2 * masks.masks[last].numel())
    assert masks.density() == pytest.approx(0.8 ** 20, rel=0.01)


@pytest.mark.parametrize("opt_name", ["adamw", "sgd"])
def test_pruned_weights_stay_exactly_zero_through_training(opt_name):
    model = _vgg()
    masks = MaskSet.for_model(model, "conv_and_linear_weights")
    masks.prune_("lamp", "global", 0.5)
    before = {n: p.detach().clone() for n, p in masks.params.items()}
    cfg = OptimizerConfig(name=opt_name, lr=0.01, weight_decay=0.01, momentum=0.9)
    opt = make_optimizer(cfg, model.parameters())
    seen = []

    class Probe(MaskHook):
        def before_forward(self, step):  # what the forward pass sees
            seen.append(all(bool((p[~m] == 0).all()) for (_, m), p in zip(masks, masks.params.values())))

    train(model, _synthetic_data(), steps=6, optimizer=opt, scheduler=None, batch_size=16, drop_last=True,
          seed=1, hooks=Probe(masks))
    assert seen == [True] * 6
    for n, p in masks.params.items():
        m = masks.masks[n]
        assert (p[~m] == 0).all()
        assert not torch.equal(p[m], before[n][m])  # the surviving weights did train


def test_gradual_pruning_reaches_its_target_without_regrowth():
    model = _vgg()
    masks = MaskSet.for_model(model, "conv_and_linear_weights")
    history = []

    class Recording(CubicMaskHook):
        def after_optimizer_step(self, step):
            super().after_optimizer_step(step)
            history.append((step + 1, {n: m.clone() for n, m in self.masks}))

    hook = Recording(masks, "magnitude", "global", final_sparsity=0.9, start=0, end=32, every=4)
    opt = make_optimizer(OptimizerConfig(name="sgd", lr=0.05, weight_decay=1e-4, momentum=0.9), model.parameters())
    train(model, _synthetic_data(), steps=40, optimizer=opt, scheduler=None, batch_size=16, drop_last=True,
          seed=2, hooks=hook)
    assert hook.updates == 8
    assert masks.density() == pytest.approx(0.10, abs=1e-3)
    for t, ms in history:  # the cubic schedule's density at every update (before step t - 1, INCHEON gating)
        if t % 4 == 0 and t <= 32:
            kept = sum(int(m.sum()) for m in ms.values())
            total = sum(m.numel() for m in ms.values())
            assert kept == round(hook.target_density(t - 1) * total)
    for (_, a), (_, b) in zip(history, history[1:]):
        assert all(not (b[n] & ~a[n]).any() for n in a)  # Zhu & Gupta: pruned weights never return
    for n, p in masks.params.items():
        assert (p[~masks.masks[n]] == 0).all()
