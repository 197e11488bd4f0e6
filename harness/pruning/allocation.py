"""Layer-wise budget allocation and the shared score -> allocation -> mask pipeline.

Implements the five per-round rules of the LAMP paper (lamp.md sections 2.3 and 3): Global MP and
LAMP (``global_`` over magnitude / LAMP scores), Uniform, Uniform+ and ERK. An allocation only
decides *how many* entries survive in each layer; which ones survive is decided by the score:
the highest-scoring eligible entries of that layer (:func:`keep_top`). For the magnitude and LAMP
scores this is "the largest |w| among the unmasked entries" of lamp.md section 3 (LAMP's score is
strictly increasing in |w| within a layer, with the same lower-index-first tie order).

Selection runs over the *eligible* entries of each :class:`Layer`: the unmasked ones for nested
(iterative) pruning, or all of them when a mask is re-selected to an absolute density (DPF,
iterative SNIP), which lets pruned entries come back.

Rounding follows the released code: per-layer fractional amounts are turned into counts with
Python's ``round`` (half-to-even), exactly as ``torch.nn.utils.prune`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch


__all__ = [
    "Layer",
    "AllocationError",
    "AllocationFn",
    "global_",
    "global_filters",
    "uniform",
    "uniform_plus",
    "erk",
    "erk_probabilities",
    "ALLOCATIONS",
    "keep_top",
    "select",
    "target_rate",
]


@dataclass(frozen=True)
class Layer:
    """One prunable tensor, in forward order.

    ``weight``: current weight values; ``mask``: bool tensor of the same shape, True where the
    entry is still unmasked (eligible); ``original_numel``: size of the layer before any pruning.
    """

    name: str
    weight: torch.Tensor
    mask: torch.Tensor
    original_numel: int

    def __post_init__(self) -> None:
        if self.mask.dtype != torch.bool:
            raise TypeError(f"layer {self.name!r}: mask must be a bool tensor, got {self.mask.dtype}")
        if self.mask.shape != self.weight.shape:
            raise ValueError(
                f"layer {self.name!r}: mask shape {tuple(self.mask.shape)} != weight shape {tuple(self.weight.shape)}"
            )

    @property
    def unmasked(self) -> int:
        """U_l: the number of entries still unmasked."""
        return int(self.mask.sum().item())


class AllocationError(ValueError):
    """Raised when an allocation rule cannot meet the requested budget (e.g. Uniform+ with f > 1)."""


AllocationFn = Callable[[Sequence[Layer], Sequence[torch.Tensor], float], list[int]]


def _counts(layers: Sequence[Layer]) -> list[int]:
    return [layer.unmasked for layer in layers]


def global_(layers: Sequence[Layer], scores: Sequence[torch.Tensor], rate: float) -> list[int]:
    """Global selection (lamp.md section 2.3 for LAMP, section 3 ``glob`` for Global MP).

    Removes exactly ``round(U * rate)`` entries (``torch.nn.utils.prune``'s count, the LAMP code's mechanism:
    at ``U * rate = x.5`` Python's half-to-even decides, as there) and keeps the ``K = U - round(U * rate)``
    with the highest score over all layers together. Masked entries are never selected; ties go to the lower index
    in the concatenation order (stable sort), so the result is deterministic.
    """
    # Exact K survivors; the released code keeps every entry with score >= the K-th score, which may keep tied extras.
    if len(layers) != len(scores):
        raise ValueError(f"got {len(layers)} layers but {len(scores)} score tensors")
    unmasked = _counts(layers)
    k = sum(unmasked) - round(sum(unmasked) * rate)
    if not layers:
        return []
    device = scores[0].device
    flat = [
        torch.where(layer.mask.reshape(-1).to(device), s.reshape(-1).to(device=device, dtype=torch.float64), -math.inf)
        for layer, s in zip(layers, scores)
    ]
    concat = torch.cat(flat)
    order = torch.argsort(concat, descending=True, stable=True)
    selected = torch.zeros(concat.numel(), dtype=torch.bool, device=device)
    selected[order[:k]] = True  # (no bincount: it has no deterministic CUDA kernel)
    return [int(part.sum().item()) for part in selected.split([f.numel() for f in flat])]


def uniform(layers: Sequence[Layer], scores: Sequence[torch.Tensor], rate: float) -> list[int]:
    """Uniform (lamp.md section 3 ``unif``): every layer, first and last included, removes
    ``round(rate * U_l)`` of its own unmasked entries."""
    return [u - round(rate * u) for u in _counts(layers)]


def uniform_plus(layers: Sequence[Layer], scores: Sequence[torch.Tensor], rate: float) -> list[int]:
    """Uniform+ (Gale et al. 2019 heuristic), exactly the pseudocode of lamp.md section 3.

    ``T = round(U * rate)``; the first prunable layer is kept dense if it is 4-D (a conv); the
    other layers remove the same fraction ``f`` of their unmasked entries, except that the last
    layer never drops below ``round(0.2 * N_last)`` (its *original* size); the middle layers then
    absorb the rest with fraction ``f_mid``. Each layer removes ``round(fraction * U_l)``.

    Raises :class:`AllocationError` when ``f > 1`` or ``f_mid > 1``.
    """
    unmasked = _counts(layers)
    n = len(unmasked)
    if n == 0:
        return []
    total_remove = round(sum(unmasked) * rate)
    floor_last = round(0.2 * layers[-1].original_numel)
    first_dense = layers[0].weight.dim() == 4
    start = 1 if first_dense else 0  # index of the first layer that may be pruned
    removals = [0] * n

    def _frac(num: int, den: int, what: str) -> float:
        if den == 0:
            if num > 0:
                raise AllocationError(f"Uniform+: {what}: {num} weights to remove but no unmasked weights to take them from")
            return 0.0
        return num / den

    rest = unmasked[start:]
    f = _frac(total_remove, sum(rest), "layers after the dense first conv" if first_dense else "all layers")
    if f > 1.0:
        raise AllocationError(
            f"Uniform+ cannot prune further: fraction f = {f:.4f} > 1 of the "
            f"{'non-first ' if first_dense else ''}layers is needed to remove {total_remove} weights"
        )
    u_last = unmasked[-1]
    if round((1.0 - f) * u_last) < floor_last:
        # last layer stops at 20 % of its original size; never negative if it is already below that
        r_last = max(u_last - floor_last, 0)
        middle = unmasked[start:-1]
        f_mid = _frac(total_remove - r_last, sum(middle), "middle layers")
        if f_mid > 1.0:
            raise AllocationError(
                f"Uniform+ cannot prune further: middle-layer fraction f_mid = {f_mid:.4f} > 1 is needed "
                f"(last layer held at its floor of {floor_last} = 20% of {layers[-1].original_numel})"
            )
        for i in range(start, n - 1):
            removals[i] = round(f_mid * unmasked[i])
        removals[-1] = r_last
    else:
        for i in range(start, n):
            removals[i] = round(f * unmasked[i])
    return [u - r for u, r in zip(unmasked, removals)]


def erk(layers: Sequence[Layer], scores: Sequence[torch.Tensor], rate: float) -> list[int]:
    """Erdos-Renyi-Kernel (Evci et al. 2020), exactly the pseudocode of lamp.md section 3.

    ``e_l`` = sum of the weight tensor's dims; ``T = (1 - rate) * U`` survivors (no rounding).
    Repeatedly: ``S_l = round(T' * e_l / sum_{j not in D} e_j)`` with ``T' = T - sum_{l in D} U_l``;
    the layer outside ``D`` with the largest ``S_l / U_l`` joins the dense set ``D`` while that
    ratio is > 1 (strictly; ties go to the first layer). Layers in ``D`` keep all ``U_l`` entries.
    A layer with ``U_l = 0`` and ``S_l > 0`` has ratio +inf (it joins ``D`` and keeps 0).
    """
    unmasked = _counts(layers)
    n = len(unmasked)
    if n == 0:
        return []
    e = [float(sum(layer.weight.shape)) for layer in layers]
    total_survive = (1.0 - rate) * sum(unmasked)
    dense: set[int] = set()
    surv = [0] * n
    while True:
        free = [i for i in range(n) if i not in dense]
        if not free:
            break
        budget = total_survive - sum(unmasked[i] for i in dense)
        e_sum = sum(e[i] for i in free)
        for i in free:
            surv[i] = round(budget * e[i] / e_sum) if e_sum > 0 else 0
        best, best_ratio = -1, 1.0
        for i in free:
            ratio = surv[i] / unmasked[i] if unmasked[i] > 0 else (math.inf if surv[i] > 0 else 0.0)
            if ratio > best_ratio:
                best, best_ratio = i, ratio
        if best < 0:
            break
        dense.add(best)
    return [unmasked[i] if i in dense else surv[i] for i in range(n)]


def erk_probabilities(shapes: Sequence[Sequence[int]], density: float) -> list[float]:
    """Per-layer keep probabilities of ERK as the PAGS predecessor's ERK pruner computes them for its
    Bernoulli draws (VITA-Group/ramanujan-on-pai ``lib/prune/pruning_utils.py:308-367``, from RigL /
    ITOP): no rounding, unlike :func:`erk` (the LAMP rule, which turns them into counts).

    ``raw_l = sum(shape_l) / prod(shape_l)``. Repeatedly, over the layers not yet dense:
    ``eps = (d * sum_free N_l - (1 - d) * sum_dense N_l) / sum_free raw_l N_l``; if
    ``eps * max raw > 1`` (strictly) **every** free layer whose raw value equals that maximum becomes
    dense (probability 1) and ``eps`` is solved again. The others get ``eps * raw_l``. The float
    operations run in the code's order, so the probabilities are bit-equal to its.
    """
    n = [math.prod(int(x) for x in s) for s in shapes]
    raw = [sum(int(x) for x in s) / m for s, m in zip(shapes, n)]
    dense: set[int] = set()
    while True:
        free = [i for i in range(len(n)) if i not in dense]
        if not free:
            return [1.0] * len(n)
        rhs, divisor = 0.0, 0.0
        for i in range(len(n)):  # :322-341, in layer order
            if i in dense:
                rhs -= n[i] * (1 - density)
            else:
                rhs += n[i] * density
                divisor += raw[i] * n[i]
        eps = rhs / divisor  # :344
        max_prob = max(raw[i] for i in free)
        if max_prob * eps > 1:  # :347-355: all layers at the maximum become dense together
            dense.update(i for i in free if raw[i] == max_prob)
        else:
            return [1.0 if i in dense else eps * raw[i] for i in range(len(n))]


def global_filters(layers: Sequence[Layer], scores: Sequence[torch.Tensor], rate: float) -> list[int]:
    """Structured global selection (DPF's filter variant): output filters ranked by their score
    (one value per filter, e.g. :func:`~harness.pruning.scores.filter_l2`) over all layers; the
    highest-ranked filters are kept, whole, until at least ``U - round(U * rate)`` eligible
    entries survive (so at most one filter more than the exact budget). Ties go to the earlier
    filter in forward order."""
    target = sum(_counts(layers)) - round(sum(_counts(layers)) * rate)
    values, sizes, owner = [], [], []
    for i, (layer, s) in enumerate(zip(layers, scores)):
        n_filters = layer.weight.shape[0]
        values.append(s.reshape(n_filters, -1)[:, 0].to(torch.float64).cpu())
        sizes.append(layer.mask.reshape(n_filters, -1).sum(1).cpu())
        owner += [i] * n_filters
    if not values:
        return []
    order = torch.argsort(torch.cat(values), descending=True, stable=True).tolist()
    size = torch.cat(sizes).tolist()
    kept = [0] * len(layers)
    total = 0
    for j in order:
        if total >= target:
            break
        kept[owner[j]] += size[j]
        total += size[j]
    return kept


ALLOCATIONS: dict[str, AllocationFn] = {
    "global": global_,
    "global_filters": global_filters,
    "uniform": uniform,
    "uniform_plus": uniform_plus,
    "erk": erk,
}


def keep_top(score: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask keeping the ``k`` eligible (``mask`` True) entries with the highest ``score``.
    Ties go to the lower flat index. Everything else, including all ineligible entries, is False."""
    available = int(mask.sum().item())
    if not 0 <= k <= available:
        raise ValueError(f"keep_top: k = {k} outside [0, {available}] eligible entries")
    flat_mask = mask.reshape(-1)
    key = torch.where(flat_mask, score.detach().reshape(-1).to(torch.float64), -math.inf)
    order = torch.argsort(key, descending=True, stable=True)
    out = torch.zeros_like(flat_mask)
    out[order[:k]] = True
    return out.reshape(mask.shape)


def select(layers: Sequence[Layer], scores: Sequence[torch.Tensor], allocation: str, rate: float) -> list[torch.Tensor]:
    """Score -> allocation -> mask: remove ``rate`` of the eligible entries (``layer.mask``),
    the allocation deciding each layer's count and the score which entries of a layer survive."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate must satisfy 0 <= rate < 1, got {rate}")
    if allocation not in ALLOCATIONS:
        raise ValueError(f"unknown allocation {allocation!r}; choose from {sorted(ALLOCATIONS)}")
    survivors = ALLOCATIONS[allocation](layers, scores, rate)
    if len(survivors) != len(layers):
        raise AllocationError(f"allocation {allocation!r} returned {len(survivors)} counts for {len(layers)} layers")
    return [keep_top(s, layer.mask, k) for layer, s, k in zip(layers, scores, survivors)]


def target_rate(layers: Sequence[Layer], target_density: float) -> float:
    """Fraction of the current unmasked entries to remove so that ``round(target_density * N)``
    survive, with ``N`` the total original size (for gradual schedules, dpf.md section 1.3).
    Clipped to [0, 1): a target at or above the current density returns 0."""
    total = sum(layer.original_numel for layer in layers)
    unmasked = sum(_counts(layers))
    if unmasked == 0:
        return 0.0
    wanted = round(target_density * total)
    rate = 1.0 - wanted / unmasked
    return min(max(rate, 0.0), math.nextafter(1.0, 0.0))
