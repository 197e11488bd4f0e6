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
from harness.pruning.methods.dynamic import DynamicParams, ReallocationHook, initial_masks
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
    """Also the guard of the bug the reviewer found (select_ applied the new mask to the weights, so every
    update zeroed the dense values of the newly pruned entries): a mask update changes only the mask; the
    dense weights stashed for the step are exactly those before the update. The step-by-step proof against
    INCHEON's code is tests/reference/test_dpf_reference.py."""
    model = _resnet(1)
    masks = MaskSet.for_model(model, "conv_weights")
    history = []
    kept_dense = []  # per update: (dense weights unchanged by it, newly pruned entries with a non-zero dense value)

    class Recording(CubicMaskHook):
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

    hook = Recording(masks, "magnitude", "global", 0.9, start=0, end=40, every=4, feedback=True)
    opt = make_optimizer(OptimizerConfig("sgd", lr=0.1, weight_decay=1e-4, momentum=0.9, nesterov=True),
                         model.parameters())
    train(model, _data(), steps=48, optimizer=opt, scheduler=None, batch_size=16, drop_last=True, seed=3, hooks=hook)
    regrown = sum(int((b[n] & ~a[n]).sum()) for a, b in zip(history, history[1:]) for n in a)
    assert regrown > 0 and hook.reactivation.total == regrown  # the feedback path, counted
    assert len(kept_dense) == hook.updates == 10 and all(same for same, _ in kept_dense)
    assert all(nonzero > 0 for _, nonzero in kept_dense)  # newly pruned entries keep their dense values
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


@pytest.fixture
def one_thread():
    """One intra-op thread (on two shared cores, two OpenMP threads can make a step many times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("regrow", ["random", "momentum", "set"])
def test_dynamic_sparse_training_reallocates_on_time_and_regrows(regrow, one_thread):
    """DSR / Sparse Momentum / SET-ITOP on a real small run: re-allocations on the reference's
    timing, regrowth counted as entries masked before an update and active after it, the final model
    sparse; SM regrows where |momentum| was largest; DSR trains hidden values of masked entries but the
    forward pass and evaluation see m * w. (The lockstep equality with each reference is in
    tests/reference/test_dynamic_reference.py.)"""
    model = _resnet(4)
    masks = MaskSet.for_model(model, "conv_weights")
    gen = torch.Generator().manual_seed(0)
    p = DynamicParams(regrow=regrow, update_every="4it", initial="uniform", prune_fraction=0.05, threshold=0.05)
    masks.set_masks_(initial_masks(masks, p, 0.2, gen))
    regrown_seen = []

    class Spy(ReallocationHook):
        def after_optimizer_step(self, step):
            old = {n: m.clone() for n, m in self.masks}
            mom = {n: self._momentum(n).clone() for n in self.masks.params}
            super().after_optimizer_step(step)
            grown = {n: self.masks.masks[n] & ~old[n] for n in old}
            regrown_seen.append(sum(int(g.sum()) for g in grown.values()))
            if regrow == "momentum":  # regrown where |momentum| is largest among the masked entries
                for n in old:
                    free = ~old[n] & ~grown[n]
                    if grown[n].any() and free.any():
                        assert mom[n][grown[n]].abs().min() >= mom[n][free].abs().max()

    hook = Spy(masks, p, every=4, total=16, stop=None, density=0.2, generator=gen)
    opt = make_optimizer(OptimizerConfig("sgd", lr=0.1, weight_decay=0.0, momentum=0.9), model.parameters())
    hook.attach(model, opt)
    hook.start()
    train(model, _data(), steps=16, optimizer=opt, scheduler=None, batch_size=16, drop_last=True, seed=5, hooks=hook)
    # DSR: after 0-based iterations 4, 8, 12; SM: after the 4th, 8th, 12th (the 16th ends the run);
    # SET-ITOP: after every 4th iteration, the last included
    assert hook.updates == {"random": 3, "momentum": 3, "set": 4}[regrow]
    assert hook.reactivation.total == sum(regrown_seen) > 0
    kept = sum(int(m.sum()) for _, m in masks)
    assert abs(kept / sum(m.numel() for _, m in masks) - 0.2) < 0.03
    hidden = any(bool((w[~masks.masks[n]] != 0).any()) for n, w in masks.params.items())
    assert hidden == (regrow == "random")  # DSR keeps training the hidden values of masked entries
    with hook.effective_weights():
        assert all(bool((w[~masks.masks[n]] == 0).all()) for n, w in masks.params.items())
    hook.finish()
    assert all(bool((w[~masks.masks[n]] == 0).all()) for n, w in masks.params.items())


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
    elif method == "dsr":  # int(0.1 n_l + 0.1) per layer at the start, then the growth loop's rounding
        assert abs(kept - round(0.1 * n)) <= 2 * len(masks) and final["density"] == kept / n
    elif method == "sparse_momentum":  # Bernoulli(0.1) per entry at the start, then drifts toward 0.1 n
        assert abs(kept - round(0.1 * n)) <= 4 * (0.09 * n) ** 0.5 + len(masks) and final["density"] == kept / n
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


@pytest.mark.parametrize("method", ["dsr", "sparse_momentum"])
def test_dynamic_run_resumes_bit_identical(tmp_path, data_root, dpf_ci, method, one_thread):
    """Interrupted after epoch 1 of 3 and resumed: the same rows and masks as an uninterrupted run. The
    re-allocation after the resume needs the checkpointed state: DSR's hidden values (in the model),
    threshold and generator; SM's growth adjustment history and prune-rate schedule."""
    spec = next(s for s in expand(dpf_ci) if s.method == method and s.seed == 0)
    spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, pretrain="3ep"),
                               eval=dataclasses.replace(spec.eval, train_examples=64, test_examples=100))
    full = experiment.run(spec, Context(paths=Paths(tmp_path / "a"), data_root=data_root, device="cpu"))
    with pytest.raises(experiment.Interrupted):
        experiment.run(spec, Context(paths=Paths(tmp_path / "b"), data_root=data_root, device="cpu",
                                     stop_after=("epoch", 1)))
    resumed = experiment.run(spec, Context(paths=Paths(tmp_path / "b"), data_root=data_root, device="cpu"))
    assert resumed == full and full[-1]["mask_updates"] == 2
    a = torch.load(Paths(tmp_path / "a").run_dir("dpf", spec.id) / "masks_final.pt")
    b = torch.load(Paths(tmp_path / "b").run_dir("dpf", spec.id) / "masks_final.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
