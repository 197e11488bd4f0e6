"""Per-entry importance scores for unstructured pruning (lamp.md sections 2.2 and 3).

A score function maps one layer's *effective* weight tensor (pruned entries already exactly 0)
to a tensor of the same shape; higher means "keep". Scores are compared across layers only by
the global allocation, so every function here must be comparable between layers.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["magnitude", "lamp", "SCORES", "ScoreFn"]

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def magnitude(w: torch.Tensor) -> torch.Tensor:
    """|w|: the magnitude score used by Global MP, Uniform, Uniform+ and ERK (lamp.md section 3)."""
    return w.abs()


def lamp(w: torch.Tensor) -> torch.Tensor:
    """LAMP score of one layer (lamp.md section 2.2), returned in float64 with ``w``'s shape.

    With the squared weights sorted ascending, ``s_1 <= ... <= s_n``,
    ``score(u) = s_u / sum_{v >= u} s_v`` (the suffix sum includes ``s_u``).

    * zero entries (already pruned) score 0; an all-zero layer scores 0 everywhere (0/0 -> 0);
    * the largest entry of a layer with any non-zero weight scores exactly 1;
    * within a layer the score is non-decreasing in |w|.

    Ties in |w| are ordered so that the lower flat index sorts *later* (gets the larger score),
    matching the "lower index wins" tie-break of :func:`harness.pruning.allocation.keep_top`.
    """
    flat = w.detach().reshape(-1).to(torch.float64)
    n = flat.numel()
    if n == 0:
        return torch.zeros(w.shape, dtype=torch.float64, device=w.device)
    s = flat * flat
    # Stable ascending sort of the reversed vector: among equal values the higher original index
    # comes first, so the lower original index receives the larger (later) score.
    rev_order = torch.argsort(s.flip(0), stable=True)
    order = (n - 1) - rev_order
    s_sorted = s[order]
    tail = s_sorted.flip(0).cumsum(0).flip(0)  # tail[u] = sum of s_sorted[u:]; tail[-1] == s_sorted[-1]
    ratio = torch.where(tail > 0, s_sorted / torch.where(tail > 0, tail, torch.ones_like(tail)), torch.zeros_like(tail))
    out = torch.empty_like(s)
    out[order] = ratio
    return out.reshape(w.shape)


SCORES: dict[str, ScoreFn] = {"magnitude": magnitude, "lamp": lamp}
