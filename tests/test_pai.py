"""Pruning at initialisation on hand-made models (pags.md 5.4): GraSP's Hessian-gradient product,
SynFlow's data independence and formula, iterative re-scoring, ERK Bernoulli draws, the batches of
a scoring round, the validation split and the best-validation selection. (The lockstep against the
predecessor's code is tests/reference/test_pai_reference.py.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from harness.data import DeviceData
from harness.models import build_model
from harness.pruning import scores
from harness.pruning.masks import MaskSet
from harness.pruning.methods import at_init
from harness.pruning.methods.at_init import AtInit, AtInitParams
from harness.pruning.methods.stage import best_of

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _data(n=64, seed=0, val=0) -> DeviceData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    d = DeviceData(x, y, x[:16], y[:16], MEAN, STD, 4, "reflect", True)
    return d


def test_synflow_is_the_formula_on_a_linear_chain_and_data_free():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 5, bias=False), nn.Linear(5, 4, bias=False))
    masks = MaskSet.for_model(model, "conv_and_linear_weights")
    w1, w2 = (model[1].weight.detach().clone(), model[2].weight.detach().clone())
    s1, s2 = scores.compute("synflow", masks.score_inputs(model))
    # R = 1^T |W2| |W1| 1 (all-ones input): dR/dW1_ij = sum_k |W2|_ki, dR/dW2_ki = sum_j |W1|_ij
    assert torch.allclose(s1, w1.abs() * w2.abs().sum(0)[:, None], rtol=1e-5)
    assert torch.allclose(s2, w2.abs() * w1.abs().sum(1)[None, :], rtol=1e-4)
    assert torch.equal(model[1].weight, w1) and torch.equal(model[2].weight, w2)  # signs restored
    # data-independent: the whole choice of mask ignores the data
    spec_params = AtInitParams(rounds=2)

    class Spec:
        params, training, score, allocation, target_sparsity = spec_params, None, "synflow", "global", 0.8

    a, b = (MaskSet.for_model(model, "conv_and_linear_weights") for _ in range(2))
    AtInit().choose_mask(Spec, model, a, _data(seed=1), torch.Generator().manual_seed(0))
    with torch.no_grad():
        model[1].weight.copy_(w1)
        model[2].weight.copy_(w2)
    AtInit().choose_mask(Spec, model, b, _data(seed=2), torch.Generator().manual_seed(5))
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    total = sum(m.numel() for _, m in a)
    assert sum(int(m.sum()) for _, m in a) == round(0.2 * total)


def test_grasp_is_w_times_hessian_gradient_product():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.Tanh(), nn.Linear(6, 3))
    x = torch.randn(8, 12)
    y = torch.randint(0, 3, (8,))
    masks = MaskSet.for_model(model, "conv_and_linear_weights")
    inputs = masks.score_inputs(model, batches=lambda: iter([(x[:4].view(4, 3, 2, 2), y[:4]),
                                                               (x[4:].view(4, 3, 2, 2), y[4:])]),
                                loss=F.cross_entropy, options={"grasp_temperature": 2.0})
    got = scores.compute("grasp", inputs)
    # by hand with autograd.functional on the flat weight vector: L(w) = sum over batches CE(f_w(x)/T)
    names = list(masks.params)
    shapes = [masks.params[n].shape for n in names]
    flat0 = torch.cat([masks.params[n].detach().reshape(-1) for n in names])

    def loss(flat):
        ws, i = [], 0
        for s in shapes:
            ws.append(flat[i:i + s.numel()].view(s))
            i += s.numel()
        h = torch.tanh(x @ ws[0].T + model[1].bias)
        return F.cross_entropy((h @ ws[1].T + model[3].bias) / 2.0, y, reduction="none")[:4].mean() \
            + F.cross_entropy((h @ ws[1].T + model[3].bias) / 2.0, y, reduction="none")[4:].mean()

    g = torch.autograd.grad(loss(flat0.requires_grad_()), flat0)[0]
    _, hg = torch.autograd.functional.hvp(loss, flat0.detach(), g)
    want = flat0.detach() * hg
    want = want / (want.sum().abs() + 1e-10)
    assert torch.allclose(torch.cat([s.reshape(-1) for s in got]), want, atol=1e-6)


def test_iterative_snip_rescores_every_entry_and_ends_exactly_at_the_density():
    torch.manual_seed(2)
    model = build_model("resnet20_cifar_optb", 10, 0.25)
    masks = MaskSet.for_model(model, "conv_and_linear_weights")
    seen = []

    class Spy(AtInit):
        pass

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

    Spy().choose_mask(Spec, model, masks, _data(), torch.Generator().manual_seed(0))
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

    AtInit().choose_mask(Spec, model, masks, None, torch.Generator().manual_seed(0))
    assert masks.density() == pytest.approx(0.1, abs=0.005)
    assert masks.density() != round(0.1 * sum(m.numel() for _, m in masks)) / sum(m.numel() for _, m in masks)
    first = {n: m.clone() for n, m in masks}
    AtInit().choose_mask(Spec, model, masks, None, torch.Generator().manual_seed(1))
    assert not all(torch.equal(first[n], m) for n, m in masks)
    layer = masks.layer_density()
    assert max(layer.values()) > 2 * min(layer.values())  # ERK: small layers denser than big ones


def test_a_rounds_batches_replay_with_n_batches_and_are_fresh_for_full_passes():
    """GraSP's two passes of one round: ``batches: n`` replays the same mini-batches (drawn once: the generator
    moves as for one draw); ``null`` draws a fresh pass each time (the code iterates its shuffling loader twice)."""
    data = _data(48)

    def draw(g):
        return (b for _, b in zip(range(2), data.train_batches(g, 16, True)))

    gen = torch.Generator().manual_seed(0)
    batches = at_init._round_batches(draw, gen, replay=True)
    first, second = list(batches()), list(batches())
    assert all(torch.equal(x, y) and torch.equal(a, b) for (x, a), (y, b) in zip(first, second))
    once = torch.Generator().manual_seed(0)
    assert [torch.equal(x, y) for (x, _), (y, _) in zip(first, draw(once))] == [True, True]
    assert torch.equal(gen.get_state(), once.get_state())
    gen = torch.Generator().manual_seed(0)
    batches = at_init._round_batches(draw, gen, replay=False)
    first, second = list(batches()), list(batches())
    assert not torch.equal(first[0][0], second[0][0])


def test_validation_split_is_the_last_images_and_evaluated_clean(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.arange(20) % 10
    d = DeviceData(x[:15], y[:15], x[:4], y[:4], MEAN, STD, 4, "reflect", True)
    d.val_x, d.val_y = x[15:], y[15:]
    (vx, vy), = list(d.eval_batches("val", 8))
    assert torch.equal(vy, y[15:]) and torch.equal(vx, d.normalise(x[15:]))  # no crop, no flip


def test_best_validation_selection_takes_the_first_of_ties():
    rows = [{"axis": "epoch", "index": e, "test_acc": t, "val_acc": v}
            for e, (t, v) in enumerate([(0.5, 0.6), (0.7, 0.8), (0.9, 0.8), (0.6, 0.7)], start=1)]
    out = best_of(rows + [{"axis": "final", "index": 0, "test_acc": 0.6}])
    assert out == {"best_test_acc": 0.9, "best_epoch": 3, "test_acc_at_best_val": 0.7, "best_val_acc": 0.8,
                   "best_val_epoch": 2}
