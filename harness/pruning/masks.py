"""A model's masks: which tensors are prunable, applying masks, selection, densities, save/load.

Masks are bool tensors on the weights' device. Applying them is one fused ``_foreach_mul_``
over every prunable weight (no ``torch.nn.utils.prune`` hooks in the training loop);
:class:`harness.pruning.updates.MaskedHook` does that after every optimizer step.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from harness.pruning import scores as score_registry
from harness.pruning.allocation import Layer, select, target_rate

_CONVENTIONS = ("conv_and_linear_weights", "conv_weights", "all_weights")


def prunable_parameters(model: nn.Module, convention: str) -> dict[str, nn.Parameter]:
    """The prunable weights of ``model`` in forward (module) order.

    * ``conv_and_linear_weights``: every Conv2d and Linear weight (LAMP, PAGS), and an attention layer's q/k/v
      projection (``in_proj_weight``).
    * ``conv_weights``: Conv2d weights only (DPF, third-party convention).
    * ``all_weights``: every parameter named ``*weight``, BN gamma included (AP's code).
    """
    if convention not in _CONVENTIONS:
        raise ValueError(f"unknown prunable convention '{convention}' (expected one of: {', '.join(_CONVENTIONS)})")
    out: dict[str, nn.Parameter] = {}
    for mname, module in model.named_modules():
        proj = getattr(module, "in_proj_weight", None)  # attention's q/k/v projection: a linear map's weight
        if isinstance(module, nn.MultiheadAttention) and isinstance(proj, nn.Parameter) and convention != "conv_weights":
            out[f"{mname}.in_proj_weight"] = proj
        w = getattr(module, "weight", None)
        if not isinstance(w, nn.Parameter):
            continue
        is_conv = isinstance(module, nn.Conv2d)
        keep = {
            "conv_and_linear_weights": is_conv or isinstance(module, nn.Linear),
            "conv_weights": is_conv,
            "all_weights": True,
        }[convention]
        if keep:
            out[f"{mname}.weight" if mname else "weight"] = w
    return out


class MaskSet:
    """Bool masks for a set of weights, with the operations every procedure needs."""

    def __init__(self, params: dict[str, nn.Parameter], masks: dict[str, torch.Tensor] | None = None):
        self.params = params
        if masks is None:
            masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()}
        if masks.keys() != params.keys():
            raise ValueError("masks and prunable parameters name different tensors")
        self.masks = {n: m.to(device=params[n].device, dtype=torch.bool) for n, m in masks.items()}
        self._stash: list[torch.Tensor] | None = None
        self._refresh()

    @classmethod
    def for_model(cls, model: nn.Module, convention: str) -> "MaskSet":
        return cls(prunable_parameters(model, convention))

    def _refresh(self) -> None:
        self._weights = list(self.params.values())
        self._factors = [m.to(p.dtype) for m, p in zip(self.masks.values(), self._weights)]

    # -- applying
    @torch.no_grad()
    def apply_(self) -> None:
        """Zero every masked weight in place (one fused multiply over all tensors; nothing for an empty set)."""
        if self._weights:
            torch._foreach_mul_(self._weights, self._factors)

    # -- straight-through (DPF): forward with m * w, step on the dense w
    @torch.no_grad()
    def stash_dense_(self) -> None:
        """Keep a copy of the dense weights, then write the masked copy m * w into them."""
        if self._stash is None or not self._weights:
            self._stash = [w.clone() for w in self._weights]
        else:
            torch._foreach_copy_(self._stash, self._weights)
        self.apply_()

    @torch.no_grad()
    def restore_dense_(self) -> None:
        """Put the dense weights back (gradients computed at m * w then update the dense w)."""
        if self._weights:
            torch._foreach_copy_(self._weights, self._stash)

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(self.masks.items())

    # -- selection
    def layers(self, eligible: str = "unmasked") -> list[Layer]:
        """The prunable tensors as the allocation rules see them (forward order). ``eligible``:
        ``unmasked`` (nested pruning: only unmasked entries can survive) or ``all`` (re-selection
        over every entry, so pruned entries can come back)."""
        if eligible not in ("unmasked", "all"):
            raise ValueError(f"eligible must be 'unmasked' or 'all', got {eligible!r}")
        return [Layer(n, p.detach(), self.masks[n] if eligible == "unmasked" else torch.ones_like(self.masks[n]),
                      p.numel()) for n, p in self.params.items()]

    def score_inputs(self, model: nn.Module | None = None, **kw) -> score_registry.ScoreInputs:
        return score_registry.ScoreInputs(model=model, params=self.params, masks=self.masks, **kw)

    def select_(self, scores: list[torch.Tensor], allocation: str, *, rate: float | None = None,
                density: float | None = None, eligible: str = "unmasked") -> dict[str, int]:
        """Re-select the masks from ``scores``; returns ``{"pruned", "regrown"}``: entries newly
        masked and entries unmasked again (0 for nested pruning).

        Only the masks change: the weights are left as they are, so a method that may bring a
        pruned entry back (DPF's dense weights, iterative SNIP's initial weights) still has its
        value. A caller whose method zeroes pruned weights calls :meth:`apply_` (``prune_`` does).

        Give ``rate`` (fraction of the eligible entries to remove) or ``density`` (absolute
        fraction of the whole prunable set to keep, ``round(density * N)`` entries)."""
        if (rate is None) == (density is None):
            raise ValueError("give exactly one of rate and density")
        layers = self.layers(eligible)
        if density is not None:
            rate = target_rate(layers, density)
        new = select(layers, scores, allocation, rate)
        old = self.masks
        stats = {"pruned": sum(int((o & ~m).sum()) for o, m in zip(old.values(), new)),
                 "regrown": sum(int((m & ~o).sum()) for o, m in zip(old.values(), new))}
        self.masks = {n: m for n, m in zip(self.params, new)}
        self._refresh()
        return stats

    def prune_(self, score: str, allocation: str, rate: float, inputs: score_registry.ScoreInputs | None = None) -> dict[str, int]:
        """One nested pruning step (remove ``rate`` of the unmasked entries) through the shared
        score -> allocation -> mask pipeline; the pruned weights are zeroed."""
        scores = score_registry.compute(score, inputs or self.score_inputs())
        stats = self.select_(scores, allocation, rate=rate)
        self.apply_()
        return stats

    def set_masks_(self, masks: dict[str, torch.Tensor]) -> None:
        self.masks = {n: masks[n].to(device=p.device, dtype=torch.bool) for n, p in self.params.items()}
        self._refresh()

    # -- measuring
    def counts(self) -> dict[str, tuple[int, int]]:
        """name -> (unmasked entries, total entries)."""
        return {n: (int(m.sum()), m.numel()) for n, m in self.masks.items()}

    def density(self) -> float:
        """Unmasked fraction of the prunable set."""
        c = self.counts().values()
        return sum(a for a, _ in c) / sum(t for _, t in c)

    def layer_density(self) -> dict[str, float]:
        return {n: a / t for n, (a, t) in self.counts().items()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: m.cpu() for n, m in self.masks.items()}


def overall_density(model: nn.Module) -> float:
    """Nonzero fraction over all parameters (biases and BN included)."""
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    return nonzero / sum(p.numel() for p in model.parameters())
