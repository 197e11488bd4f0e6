"""DPF and its baselines on real small computations (dpf.md sections 1, 4, 9): the straight-through
step against its formula, feedback (pruned weights keep training and come back), the exact final
density, the cubic endpoints, structured filters, DSR / Sparse Momentum re-allocation, and the ci
grid's methods through the experiment runner."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from harness import experiment
from harness.config import OptimizerConfig, expand, load
from harness.data import DeviceData
from harness.experiment import Context
from harness.models import build_model
from harness.paths import Paths
from harness.pruning import scores
from harness.pruning.masks import MaskSet
from harness.pruning.methods.dynamic import DynamicParams, ReallocationHook
from harness.pruning.methods.gradual import CubicMaskHook
from harness.train import make_optimizer, train

from .conftest import ROOT

DPF = ROOT / "paper_configs" / "dpf.yaml"
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def _data(n: int = 64, seed: int = 0) -> DeviceData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DeviceData(x, y, x[:16], y[:16], MEAN, STD, 4, "zeros", True)


def _resnet(seed: int = 0, width: float = 0.25) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("resnet20_cifar_optb", 10, width)


@pytest.fixture(scope="module")
def dpf_ci():
    return load(DPF, "ci")


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
    hook = CubicMaskHook(masks, "magnitude", "global", 0.5, start=0, end=100, every=1000, feedback=True)
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
    model = _resnet(1)
    masks = MaskSet.for_model(model, "conv_weights")
    history = []

    class Recording(CubicMaskHook):
        def before_forward(self, step):
            super().before_forward(step)
            history.append({n: m.clone() for n, m in self.masks})

    hook = Recording(masks, "magnitude", "global", 0.9, start=0, end=40, every=4, feedback=True)
    opt = make_optimizer(OptimizerConfig("sgd", lr=0.1, weight_decay=1e-4, momentum=0.9, nesterov=True),
                         model.parameters())
    train(model, _data(), steps=48, optimizer=opt, scheduler=None, batch_size=16, drop_last=True, seed=3, hooks=hook)
    regrown = sum(int((b[n] & ~a[n]).sum()) for a, b in zip(history, history[1:]) for n in a)
    assert regrown > 0 and hook.reactivation.total == regrown  # the feedback path, counted
    dense = {n: p.detach() for n, p in masks.params.items()}
    assert any(bool((dense[n][~m] != 0).any()) for n, m in masks)  # pruned coordinates kept their dense values
    total = sum(m.numel() for _, m in masks)
    assert sum(int(m.sum()) for _, m in masks) == round(hook.target_density(39) * total)
    with hook.effective_weights():  # evaluation sees m * w, and gives the dense weights back
        assert all(bool((p[~masks.masks[n]] == 0).all()) for n, p in masks.params.items())
    assert all(torch.equal(dense[n], p.detach()) for n, p in masks.params.items())
    assert hook.target_density(0) == 1.0 and hook.target_density(40) == pytest.approx(0.1)  # cubic endpoints


def test_structured_dpf_keeps_whole_filters():
    model = _resnet(2)
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


@pytest.mark.parametrize("regrow", ["random", "momentum"])
def test_dynamic_sparse_training_keeps_the_density_and_regrows(regrow):
    model = _resnet(4)
    masks = MaskSet.for_model(model, "conv_weights")
    gen = torch.Generator().manual_seed(0)
    masks.select_(scores.compute("random", masks.score_inputs(model, generator=gen)), "uniform", density=0.2,
                  eligible="all")
    kept0 = sum(int(m.sum()) for _, m in masks)
    p = DynamicParams(regrow=regrow, update_every="4it", initial="uniform", prune_fraction=0.05, threshold=0.05)
    hook = ReallocationHook(masks, p, every=4, stop=32, updates_total=8, generator=gen)
    opt = make_optimizer(OptimizerConfig("sgd", lr=0.1, weight_decay=0.0, momentum=0.9), model.parameters())
    hook.attach(model, opt)
    before = {n: m.clone() for n, m in masks}
    if regrow == "momentum":
        seen_momentum = {}

        class Spy(ReallocationHook):
            def _reallocate(self):
                seen_momentum.update({n: self._momentum(n).clone() for n in self.masks.params})
                old = {n: m.clone() for n, m in self.masks}
                super()._reallocate()
                grown = {n: self.masks.masks[n] & ~old[n] for n in old}
                for n in old:  # regrown where |momentum| is largest among the previously masked entries
                    if grown[n].any():
                        free = ~old[n] & ~grown[n]
                        if free.any():
                            assert seen_momentum[n][grown[n]].min() >= seen_momentum[n][free].max()

        hook = Spy(masks, p, every=4, stop=32, updates_total=8, generator=gen)
        hook.attach(model, opt)
    train(model, _data(), steps=32, optimizer=opt, scheduler=None, batch_size=16, drop_last=True, seed=5, hooks=hook)
    assert hook.updates == 8
    assert sum(int(m.sum()) for _, m in masks) == kept0  # density held exactly
    assert hook.reactivation.total > 0
    assert any(bool((m & ~before[n]).any()) for n, m in masks)
    assert all(bool((p[~masks.masks[n]] == 0).all()) for n, p in masks.params.items())


@pytest.mark.parametrize("method", ["dense", "snip", "one_shot", "incremental", "dsr", "sparse_momentum", "dpf"])
def test_every_dpf_method_runs_and_reaches_its_target_exactly(tmp_path, data_root, dpf_ci, method):
    spec = next(s for s in expand(dpf_ci) if s.method == method and s.seed == 0)
    spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, pretrain="2ep"),
                               eval=dataclasses.replace(spec.eval, train_examples=64, every="1ep"))
    if method == "one_shot":
        spec = dataclasses.replace(spec, params=dataclasses.replace(spec.params, finetune="1ep"))
    rows = experiment.run(spec, Context(paths=Paths(tmp_path), data_root=data_root, device="cpu"))
    final = rows[-1]
    assert final["axis"] == "final" and 0 <= final["test_acc"] <= 1
    masks = torch.load(Paths(tmp_path).run_dir("dpf", spec.id) / "masks_final.pt")
    n = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    if method == "dense":
        assert kept == n and final["density"] == 1.0
    elif method == "incremental" or method == "dpf":
        pass  # the cubic target is reached at end = 5ep; 2 epochs here: checked in the full-length test below
    elif method in ("dsr", "sparse_momentum"):  # a uniform random start: each layer rounds its own share
        assert abs(kept - round(0.1 * n)) <= len(masks) / 2 and final["density"] == kept / n
    else:
        assert kept == round(0.1 * n) and final["density"] == kept / n
    assert set(masks) == {k for k in masks if k.endswith(".weight")}  # conv weights only: no BN, no bias, no Linear
    assert not any(k.startswith("fc") or "linear" in k for k in masks)


def test_dpf_ci_run_ends_at_the_target_density_exactly_and_resumes_bit_identical(tmp_path, data_root, dpf_ci,
                                                                                   monkeypatch):
    spec = next(s for s in expand(dpf_ci) if s.method == "dpf" and s.seed == 1)
    full = experiment.run(spec, Context(paths=Paths(tmp_path / "a"), data_root=data_root, device="cpu"))
    masks = torch.load(Paths(tmp_path / "a").run_dir("dpf", spec.id) / "masks_final.pt")
    n = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(0.1 * n)  # the last update before the freeze
    assert full[-1]["density"] == round(0.1 * n) / n
    assert full[-1]["reactivated_total"] > 0 and [r["index"] for r in full] == [1, 2, 3, 4, 5, 6, 0]
    with pytest.raises(experiment.Interrupted):
        experiment.run(spec, Context(paths=Paths(tmp_path / "b"), data_root=data_root, device="cpu",
                                     stop_after=("epoch", 3)))
    resumed = experiment.run(spec, Context(paths=Paths(tmp_path / "b"), data_root=data_root, device="cpu"))
    assert resumed == full
    a = torch.load(Paths(tmp_path / "a").run_dir("dpf", spec.id) / "masks_final.pt")
    b = torch.load(Paths(tmp_path / "b").run_dir("dpf", spec.id) / "masks_final.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
