"""Per-entry importance scores (lamp.md sections 2.2 and 3) and the score registry.

Higher means "keep": a score ranks the entries within a layer, and a global allocation compares
them across layers too. A :class:`Score` declares what it needs:

* ``weights``: a function of one layer's *effective* weight tensor (pruned entries exactly 0),
  here: magnitude and LAMP;
* ``batches`` / ``gradients`` / ``hessian`` / ``activations``: scores that need the model and
  data (:mod:`harness.pruning.saliency`), computed from a :class:`ScoreInputs` that the
  procedure supplies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from harness.pruning import saliency
from harness.pruning.saliency import ScoreInputs
from harness.pruning.catalog import SCORES as CATALOG
from harness.pruning.catalog import WEIGHTS_ONLY

__all__ = ["magnitude", "lamp", "filter_l2", "SCORES", "Score", "ScoreInputs", "WEIGHTS_ONLY", "register", "compute"]


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


@dataclass(frozen=True)
class Score:
    """The implementation of a catalog score (:data:`harness.pruning.catalog.SCORES` says what it needs):
    ``per_layer`` for weight-only scores, ``compute`` for the others."""

    name: str
    per_layer: Callable[[torch.Tensor], torch.Tensor] | None = None
    compute: Callable[[ScoreInputs], list[torch.Tensor]] | None = None

    @property
    def needs(self) -> frozenset:
        return CATALOG[self.name].needs

    @property
    def description(self) -> str:
        return CATALOG[self.name].description


SCORES: dict[str, Score] = {}


def register(score: Score) -> Score:
    """Register the implementation of a score the catalog names (weight-only scores ``per_layer``, the others
    ``compute``)."""
    if score.name not in CATALOG:
        raise ValueError(f"score {score.name!r} is not in the catalog (harness.pruning.catalog.add_score first)")
    if (score.per_layer is None) == (score.compute is None) or \
            (score.per_layer is not None) != (CATALOG[score.name].needs == WEIGHTS_ONLY):
        raise ValueError(f"score {score.name!r}: a weight-only score has per_layer, any other compute (exactly one)")
    SCORES[score.name] = score
    return score


def compute(name: str, inputs: ScoreInputs, dense: bool = False) -> list[torch.Tensor]:
    """The scores of every prunable tensor. Weight-only scores see the effective weights
    (masked entries 0), or the dense weights when ``dense`` (re-selection over all entries)."""
    score = SCORES[name]
    if score.per_layer is not None:
        return [score.per_layer(p.detach() if dense else p.detach() * inputs.masks[n].to(p.dtype))
                for n, p in inputs.params.items()]
    missing = [need for need, have in (("model", inputs.model), ("batches", inputs.batches),
                                       ("gradients", inputs.loss), ("rng", inputs.generator))
               if need in score.needs and have is None]
    if missing:
        raise ValueError(f"score {name!r} needs {', '.join(missing)}, which the procedure did not supply")
    return score.compute(inputs)


def filter_l2(w: torch.Tensor) -> torch.Tensor:
    """Structured score: every entry gets the L2 norm of its output filter (row of a Linear),
    so whole filters rank together (DPF's structured variant, dpf.md 1.2 and defect 2)."""
    norms = w.detach().reshape(w.shape[0], -1).to(torch.float64).norm(dim=1)
    return norms.reshape(-1, *([1] * (w.dim() - 1))).expand(w.shape).clone()


register(Score("magnitude", per_layer=magnitude))
register(Score("filter_l2", per_layer=filter_l2))
register(Score("lamp", per_layer=lamp))
register(Score("snip", compute=saliency.snip))
register(Score("grasp", compute=saliency.grasp))
register(Score("synflow", compute=saliency.synflow))
register(Score("random", compute=saliency.random))
