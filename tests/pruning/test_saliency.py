"""harness/pruning/saliency.py: SynFlow and GraSP against their formulas."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from harness.pruning import scores
from harness.pruning.masks import MaskSet
from harness.pruning.methods.at_init import AtInitParams
from tests.reference.common import choose_at_init

from tests.tiny import FLAT_MEAN, FLAT_STD, images


def flat(n: int = 64, seed: int = 0):
    return images(n, seed, FLAT_MEAN, FLAT_STD, "reflect")


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
    choose_at_init(Spec, model, a, flat(seed=1), torch.Generator().manual_seed(0))
    with torch.no_grad():
        model[1].weight.copy_(w1)
        model[2].weight.copy_(w2)
    choose_at_init(Spec, model, b, flat(seed=2), torch.Generator().manual_seed(5))
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
