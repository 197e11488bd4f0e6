"""A transcription of LAMP's released code, jaeho-lee/layer-adaptive-sparsity @ f9fa4f3c: the five per-round
rules (``glob``, ``unif``, ``unifplus``, ``erk``, ``lamp``) and the prune -> retrain loop around them.

Its own wording of every rule, each citing the file and line it models (``tools/pruners.py`` etc. are the
repository's files). Like the released code it masks through ``torch.nn.utils.prune`` (a library call, not
copied code): a re-parametrisation ``weight = weight_orig * weight_mask`` on every Conv2d and Linear,
installed before the dense pre-training (``tools/modelloaders.py:69`` -> ``tools/pruners.py:28-31``), with
per-layer fractional amounts that PyTorch's pruning container applies to the *remaining* entries of each
layer (``round(amount * remaining)`` of them, the smallest ``|w|`` first: ``tools/pruners.py:33-36``).

The allocation arithmetic keeps the code's types: counts are a float32 tensor (``tools/pruners.py:192-200``),
``np.round`` on such a tensor is ``Tensor.round`` (half to even, float32), the fractions are float32 tensors
turned into Python floats only when handed to ``l1_unstructured`` (``float(amounts[idx])``,
``tools/pruners.py:36``), where PyTorch rounds ``amount * remaining`` in double.

The loop (``iterate.py:41-67``, ``tools/train.py:14-79``): a fresh optimiser for every training
(``tools/train.py:16``: ``AdamW(lr=3e-4)`` with PyTorch's defaults, weight decay 0.01, ``tools/modelloaders.py``
for every model), ``zero_grad; forward; cross-entropy; backward; step`` per step (``tools/train.py:34-38``), and
after the steps an evaluation pass (``tools/train.py:76-77``) whose forward pre-hooks recompute
``module.weight`` from the current ``weight_orig``: the next pruning round reads those weights
(``tools/utils.py:20-25``). :meth:`Lamp.refresh` models that pass.

Switches for the project's declared deviations (``paper_configs/lamp.yaml``):

* ``exact_k`` (``exact_k_ties``): the LAMP rule keeps exactly ``K`` survivors, ties to the lower index of the
  concatenation in module order, instead of every score ``>= `` the ``K``-th (``tools/pruners.py:171-175``).

Nothing here imports ``harness``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import prune


def prunable_modules(model: nn.Module) -> list[nn.Module]:
    """Every Conv2d and Linear, in ``model.modules()`` order (tools/utils.py:7-8, 34-39)."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def weights(model: nn.Module) -> list[torch.Tensor]:
    """The ``weight`` attribute of each prunable module (tools/utils.py:20-25): with the re-parametrisation,
    the masked weight as of the module's latest forward pass."""
    return [m.weight for m in prunable_modules(model)]


def unmasked_counts(model: nn.Module) -> torch.Tensor:
    """float32 tensor of each layer's mask sum (tools/pruners.py:192-200)."""
    return torch.tensor([float(m.weight_mask.sum()) for m in prunable_modules(model)], dtype=torch.float32)


def total_counts(model: nn.Module) -> torch.Tensor:
    """float32 tensor of each layer's size (tools/pruners.py:202-210)."""
    return torch.tensor([float(w.numel()) for w in weights(model)], dtype=torch.float32)


def install(model: nn.Module) -> None:
    """An all-ones mask on every prunable weight (tools/pruners.py:28-31)."""
    for m in prunable_modules(model):
        prune.identity(m, name="weight")


def per_layer(model: nn.Module, amounts) -> None:
    """Each layer prunes ``float(amount)`` of its remaining entries, smallest |w| first (tools/pruners.py:33-36)."""
    for m, a in zip(prunable_modules(model), amounts):
        prune.l1_unstructured(m, name="weight", amount=float(a))


# --------------------------------------------------------------------------------------------- the five rules


def glob(model: nn.Module, amount: float) -> None:
    """``glob``: one L1 ranking over every prunable tensor's remaining entries (tools/pruners.py:42-44)."""
    prune.global_unstructured([(m, "weight") for m in prunable_modules(model)],
                              pruning_method=prune.L1Unstructured, amount=amount)


def unif(model: nn.Module, amount: float) -> None:
    """``unif``: every layer, first and last included, prunes ``amount`` of its own remaining entries
    (tools/pruners.py:51-55)."""
    for m in prunable_modules(model):
        prune.l1_unstructured(m, name="weight", amount=amount)


def unifplus_amounts(model: nn.Module, amount: float, floor_from: str = "total") -> list:
    """tools/pruners.py:79-118. ``floor_from`` is only for a planted difference: "total" is the code (the
    last layer keeps at least 20 % of its ORIGINAL size, :88), "current" would use its current size."""
    u = unmasked_counts(model)
    sizes = total_counts(model) if floor_from == "total" else u
    floor_last = (sizes[-1] * 0.2).round()  # :88 (np.round of a float32 tensor)
    to_prune = (u.sum() * amount).round()  # :89
    first_dense = weights(model)[0].dim() == 4  # :91
    lo = 1 if first_dense else 0  # the first conv keeps everything (:92); otherwise it is a middle layer
    out: list = [0] if first_dense else []
    frac = (to_prune * 1.0) / u[lo:].sum()  # :93, :107
    if frac > 1.0:  # :94-95
        raise ValueError("Uniform+ cannot prune further")
    if (((1.0 - frac) * u[-1]).round()) < floor_last:  # :96-97, :108-109
        last = u[-1] - floor_last  # :98, :110
        frac_mid = ((to_prune - last) * 1.0) / u[lo:-1].sum()  # :99, :111
        if frac_mid > 1.0:  # :100-101, :112-113
            raise ValueError("Uniform+ cannot prune further")
        out += [frac_mid] * (len(u) - 1 - lo) + [(last * 1.0) / u[-1]]  # :102-103, :114-115
    else:
        out += [frac] * (len(u) - lo)  # :105, :117
    return out


def unifplus(model: nn.Module, amount: float, floor_from: str = "total") -> None:
    per_layer(model, unifplus_amounts(model, amount, floor_from))  # tools/pruners.py:57-60


def erk_dims(model: nn.Module) -> torch.Tensor:
    """Sum of the weight's dimensions per layer, float32 (tools/pruners.py:182-190)."""
    return torch.tensor([float(sum(w.shape)) for w in weights(model)], dtype=torch.float32)


def erk_amounts(model: nn.Module, amount: float, rounding=torch.round) -> torch.Tensor:
    """tools/pruners.py:120-160, float32 throughout. ``rounding`` is only for a planted difference."""
    u, e = unmasked_counts(model), erk_dims(model)
    n = len(u)
    dense = torch.zeros(n)  # 1.0 for a layer kept dense this round
    survive = (1.0 - amount) * u.sum()  # :129
    while True:  # :133-151
        budget = survive - (dense * u).sum()  # :135
        e_free = e * (1.0 - dense)  # :137
        surv = rounding(budget * e_free / e_free.sum())  # :138
        pick, best = -1, 1.0  # :140-141
        for i in range(n):  # :142-146: the first layer with the largest ratio above 1
            if dense[i] == 0 and surv[i] / u[i] > best:
                pick, best = i, surv[i] / u[i]
        if pick == -1:
            break
        dense[pick] = 1
    out = torch.zeros(n)  # :153-159
    for i in range(n):
        out[i] = 0.0 if dense[i] == 1 else 1.0 - surv[i] / u[i]
    return out


def erk(model: nn.Module, amount: float) -> None:
    per_layer(model, erk_amounts(model, amount))  # tools/pruners.py:62-65


def lamp_scores(w: torch.Tensor) -> torch.Tensor:
    """tools/pruners.py:212-228 on ``w ** 2`` (float32): sort ascending, divide each value by the sum of itself
    and everything after it (the total minus the exclusive prefix sum), scatter back."""
    s = (w ** 2).reshape(-1)
    vals, idx = s.sort(descending=False)  # :217
    prefix = torch.zeros(vals.shape)
    prefix[1:] = vals.cumsum(dim=0)[:-1]  # :219-221
    ratio = vals / (s.sum() - prefix)  # :223
    out = torch.zeros(vals.shape)
    out[idx] = ratio  # :225-226
    return out.reshape(w.shape)


def lamp_amounts(model: nn.Module, amount: float, exact_k: bool = False) -> list[torch.Tensor]:
    """tools/pruners.py:162-180: the number of survivors, the threshold = the K-th largest score over all
    layers, each layer keeps its scores ``>=`` it. ``exact_k`` (deviation exact_k_ties): exactly K, ties to
    the lower index."""
    u = unmasked_counts(model)
    k = int((u.sum() * (1.0 - amount)).round())  # :167 (np.round of a float32 tensor is Tensor.round)
    flat = [lamp_scores(w.detach()).reshape(-1) for w in weights(model)]  # :169
    cat = torch.cat(flat)  # :170
    if exact_k:
        order = torch.argsort(cat, descending=True, stable=True)
        sel = torch.zeros(cat.shape, dtype=torch.bool)
        sel[order[:k]] = True
        survivors = [part.sum() for part in sel.split([len(f) for f in flat])]
    else:
        threshold = torch.topk(cat, k)[0][-1]  # :171-172
        survivors = [(f >= threshold).sum() for f in flat]  # :175
    return [1.0 - (s / u[i]) for i, s in enumerate(survivors)]  # :176-178 (int64 / float32 -> float32)


def lamp(model: nn.Module, amount: float, exact_k: bool = False) -> None:
    per_layer(model, lamp_amounts(model, amount, exact_k))  # tools/pruners.py:46-49


RULES = {"global": glob, "uniform": unif, "uniform_plus": unifplus, "erk": erk, "lamp": lamp}


# --------------------------------------------------------------------------------------------- the loop


class Lamp:
    """The released prune -> retrain loop on ``model`` (iterate.py:59-67 around tools/train.py:14-79)."""

    def __init__(self, model: nn.Module, rule="lamp", lr: float = 3e-4, installed: bool = False, **rule_kw):
        """``rule``: a name of :data:`RULES` or a function ``(model, amount)``; ``installed``: the model already
        carries the masks (a copy of the pre-trained one, shared by the five rules as iterate.py:41-57 does)."""
        self.model, self.rule, self.lr, self.rule_kw = model, rule, lr, rule_kw
        if not installed:
            install(model)  # tools/modelloaders.py:69, before the dense pre-training
        self.optimizer = None
        model.train()

    def fresh_optimizer(self) -> None:
        """tools/train.py:16 with ``partial(optim.AdamW, lr=0.0003)`` (tools/modelloaders.py:15-24):
        betas (0.9, 0.999), eps 1e-8, weight decay 0.01 are AdamW's defaults, written out here."""
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr, betas=(0.9, 0.999), eps=1e-8,
                                           weight_decay=0.01)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """tools/train.py:34-38."""
        self.optimizer.zero_grad()
        loss = F.cross_entropy(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    @torch.no_grad()
    def refresh(self, x: torch.Tensor) -> None:
        """The evaluation after every training (tools/train.py:76-77, 81-102): eval mode, a forward pass (which
        recomputes every ``module.weight`` from ``weight_orig``), back to train mode."""
        self.model.eval()
        self.model(x)
        self.model.train()

    def prune_round(self, amount: float) -> None:
        """iterate.py:63."""
        (RULES[self.rule] if isinstance(self.rule, str) else self.rule)(self.model, amount, **self.rule_kw)

    # -- what the lockstep test reads
    def masks(self) -> list[torch.Tensor]:
        return [m.weight_mask.bool() for m in prunable_modules(self.model)]

    def effective(self) -> dict[str, torch.Tensor]:
        """Every parameter and buffer by the plain model's names: ``name.weight`` = ``weight_orig * weight_mask``."""
        out = {}
        for name, m in self.model.named_modules():
            for pn, p in m.named_parameters(recurse=False):
                if pn == "weight_orig":
                    out[f"{name}.weight"] = (p * m.weight_mask).detach()
                else:
                    out[f"{name}.{pn}" if name else pn] = p.detach()
            for bn, b in m.named_buffers(recurse=False):
                if bn != "weight_mask":
                    out[f"{name}.{bn}" if name else bn] = b.detach()
        return out
