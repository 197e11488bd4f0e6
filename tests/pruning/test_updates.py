"""harness/pruning/updates.py: mask updates inside real training: pruned weights stay exactly zero, gradual pruning
reaches its target without regrowth, DPF's straight-through step equals its formula, its feedback brings pruned
weights back (the dense values untouched by a mask update), and structured re-selection keeps whole filters."""

from __future__ import annotations

import pytest
import torch
from harness.pruning.schedules import Cubic
from harness.pruning.steps import Reselect
from harness.pruning.updates import MaskedHook, ReselectHook
from harness.models.build import build_model
from harness.pruning.masks import MaskSet, prunable_parameters
from harness.pruning.methods import METHODS
from harness.train import make_optimizer, train
from harness.config import OptimizerConfig
from torch import nn
from torch.nn import functional as F
from harness.pruning import scores

from tests.tiny import images, resnet20


CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)


LAMP_METHODS = ["global", "uniform", "uniform_plus", "erk", "lamp"]


def _vgg(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("vgg16_bn_fc1_lamp", 10, 0.125)


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

    class Probe(MaskedHook):
        def before_forward(self, step):  # what the forward pass sees
            seen.append(all(bool((p[~m] == 0).all()) for (_, m), p in zip(masks, masks.params.values())))

    train(model, images(), steps=6, optimizer=opt, scheduler=None, batch_size=16, drop_last=True,
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

    class Recording(ReselectHook):
        def after_optimizer_step(self, step):
            super().after_optimizer_step(step)
            history.append((step + 1, {n: m.clone() for n, m in self.masks}))

    hook = Recording(masks, Reselect(Cubic(final_sparsity=0.9, start=0, end=32, every=4), "magnitude", "global"))
    opt = make_optimizer(OptimizerConfig(name="sgd", lr=0.05, weight_decay=1e-4, momentum=0.9), model.parameters())
    train(model, images(), steps=40, optimizer=opt, scheduler=None, batch_size=16, drop_last=True,
          seed=2, hooks=hook)
    assert hook.updates == 8
    assert masks.density() == pytest.approx(0.10, abs=1e-3)
    for t, ms in history:  # the cubic schedule's density at every update (before step t - 1, INCHEON gating)
        if t % 4 == 0 and t <= 32:
            kept = sum(int(m.sum()) for m in ms.values())
            total = sum(m.numel() for m in ms.values())
            assert kept == round(hook.schedule.density(t - 1) * total)
    for (_, a), (_, b) in zip(history, history[1:]):
        assert all(not (b[n] & ~a[n]).any() for n in a)  # Zhu & Gupta: pruned weights never return
    for n, p in masks.params.items():
        assert (p[~masks.masks[n]] == 0).all()


def test_straight_through_step_equals_the_formula_on_a_hand_made_layer():
    """w_{t+1} = w_t - lr * dL/dw~ evaluated at w~ = m * w, applied to every entry of the dense w."""
    torch.manual_seed(0)
    layer = nn.Linear(4, 3, bias=False)
    w0 = torch.tensor([[0.5, -1.0, 0.25, 2.0], [1.5, 0.1, -0.3, 0.0], [-0.7, 0.9, 0.05, -1.2]])
    with torch.no_grad():
        layer.weight.copy_(w0)
    masks = MaskSet({"weight": layer.weight})
    m = torch.tensor([[1, 0, 1, 1], [1, 0, 0, 1], [0, 1, 1, 1]], dtype=torch.bool)
    masks.set_masks_({"weight": m})
    hook = ReselectHook(masks, Reselect(Cubic(0.5, start=0, end=100, every=1000), "magnitude", "global", feedback=True))
    x = torch.tensor([[1.0, 2.0, -1.0, 0.5], [0.3, -0.2, 0.8, 1.0]])
    y = torch.tensor([2, 0])
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    hook.before_forward(0)
    assert torch.equal(layer.weight.detach(), w0 * m)  # the forward pass sees m * w
    loss = F.cross_entropy(layer(x), y)
    opt.zero_grad()
    loss.backward()
    hook.before_optimizer_step(0)
    opt.step()
    hook.after_optimizer_step(0)
    # by hand: dL/dW~ = (softmax(W~ x) - onehot) x^T averaged over the batch, at W~ = m * w0
    wt = w0 * m
    grad = torch.zeros_like(w0)
    for xi, yi in zip(x, y):
        p = torch.softmax(wt @ xi, 0)
        p[yi] -= 1
        grad += torch.outer(p, xi) / len(y)
    assert torch.allclose(layer.weight.detach(), w0 - 0.1 * grad, atol=1e-6)
    assert not torch.equal(layer.weight.detach()[~m], w0[~m])  # pruned entries were updated too


def test_dpf_feedback_trains_pruned_weights_and_some_come_back():
    """Also the guard of the bug the reviewer found (select_ applied the new mask to the weights, so every
    update zeroed the dense values of the newly pruned entries): a mask update changes only the mask; the
    dense weights stashed for the step are exactly those before the update. The step-by-step proof against
    INCHEON's code is tests/reference/test_dpf_reference.py."""
    model = resnet20(1)
    masks = MaskSet.for_model(model, "conv_weights")
    history = []
    kept_dense = []  # per update: (dense weights unchanged by it, newly pruned entries with a non-zero dense value)

    class Recording(ReselectHook):
        def before_forward(self, step):
            dense = [p.detach().clone() for p in self.masks.params.values()]
            old = {n: m.clone() for n, m in self.masks}
            updates = self.updates
            super().before_forward(step)
            if self.updates > updates:
                stashed = self.masks._stash  # the dense weights the step restores and updates
                newly = [old[n] & ~m for n, m in self.masks]
                kept_dense.append((all(torch.equal(a, b) for a, b in zip(dense, stashed)),
                                   sum(int((b[p] != 0).sum()) for b, p in zip(stashed, newly))))
            history.append({n: m.clone() for n, m in self.masks})

    hook = Recording(masks, Reselect(Cubic(0.9, start=0, end=40, every=4), "magnitude", "global", feedback=True))
    opt = make_optimizer(OptimizerConfig("sgd", lr=0.1, weight_decay=1e-4, momentum=0.9, nesterov=True),
                         model.parameters())
    train(model, images(), steps=48, optimizer=opt, scheduler=None, batch_size=16, drop_last=True, seed=3, hooks=hook)
    regrown = sum(int((b[n] & ~a[n]).sum()) for a, b in zip(history, history[1:]) for n in a)
    assert regrown > 0 and hook.reactivation.total == regrown  # the feedback path, counted
    assert len(kept_dense) == hook.updates == 10 and all(same for same, _ in kept_dense)
    assert all(nonzero > 0 for _, nonzero in kept_dense)  # newly pruned entries keep their dense values
    dense = {n: p.detach() for n, p in masks.params.items()}
    assert any(bool((dense[n][~m] != 0).any()) for n, m in masks)  # pruned coordinates kept their dense values
    total = sum(m.numel() for _, m in masks)
    assert sum(int(m.sum()) for _, m in masks) == round(hook.schedule.density(39) * total)
    with hook.effective_weights():  # evaluation sees m * w, and gives the dense weights back
        assert all(bool((p[~masks.masks[n]] == 0).all()) for n, p in masks.params.items())
    assert all(torch.equal(dense[n], p.detach()) for n, p in masks.params.items())
    assert hook.schedule.density(0) == 1.0 and hook.schedule.density(40) == pytest.approx(0.1)  # cubic endpoints


def test_structured_dpf_keeps_whole_filters():
    model = resnet20(2)
    masks = MaskSet.for_model(model, "conv_weights")
    stats = masks.select_(scores.compute("filter_l2", masks.score_inputs(), dense=True), "global_filters",
                          density=0.5, eligible="all")
    assert stats["regrown"] == 0
    for n, m in masks:
        per_filter = m.reshape(m.shape[0], -1)
        assert bool((per_filter.all(1) | ~per_filter.any(1)).all()), n  # each filter all kept or all pruned
    total = sum(m.numel() for _, m in masks)
    kept = sum(int(m.sum()) for _, m in masks)
    biggest_filter = max(m[0].numel() for _, m in masks)
    assert round(0.5 * total) <= kept < round(0.5 * total) + biggest_filter
    # the kept filters are the globally largest by L2 norm
    norms = [(float(p.detach()[i].norm()), bool(masks.masks[n][i].any()))
             for n, p in masks.params.items() for i in range(p.shape[0])]
    assert min(v for v, k in norms if k) >= max(v for v, k in norms if not k)
