"""The pruning catalog (torch-free): every score's name, what it needs and what it is, and every allocation's name,
so that configs are validated and grids planned without torch. The implementations are registered under the same
names in :mod:`harness.pruning.scores` / :mod:`harness.pruning.saliency` and :mod:`harness.pruning.allocation` (a
test checks both sides name the same entries).

A score's ``needs``: ``weights`` (a function of one layer's effective weights), ``model``, ``batches``,
``gradients``, ``hessian``, ``activations``, ``rng`` (what the procedure must supply in a ``ScoreInputs``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NEEDS", "WEIGHTS_ONLY", "ScoreInfo", "SCORES", "ALLOCATIONS", "add_score", "add_allocation"]

NEEDS = frozenset({"weights", "model", "batches", "gradients", "hessian", "activations", "rng"})
WEIGHTS_ONLY = frozenset({"weights"})


@dataclass(frozen=True)
class ScoreInfo:
    name: str
    needs: frozenset
    description: str = ""

    def __post_init__(self) -> None:
        unknown = set(self.needs) - NEEDS
        if unknown or not self.needs:
            raise ValueError(f"score {self.name!r}: needs {sorted(unknown) or 'nothing'}; expected some of "
                             f"{', '.join(sorted(NEEDS))}")
        object.__setattr__(self, "needs", frozenset(self.needs))

    @property
    def data_passes(self) -> int:
        """Forward + backward passes over the scoring batches: 2 with a Hessian-gradient product, 1 with gradients,
        0 without data."""
        return 0 if "batches" not in self.needs else (2 if "hessian" in self.needs else 1)


SCORES: dict[str, ScoreInfo] = {s.name: s for s in (
    ScoreInfo("magnitude", WEIGHTS_ONLY, "|w|"),
    ScoreInfo("filter_l2", WEIGHTS_ONLY, "L2 norm of the entry's output filter"),
    ScoreInfo("lamp", WEIGHTS_ONLY, "LAMP: w_u^2 / sum_{v>=u} w_v^2 per layer"),
    ScoreInfo("snip", frozenset({"batches", "gradients"}), "SNIP |g * w| (Lee et al. 2019)"),
    ScoreInfo("grasp", frozenset({"batches", "gradients", "hessian"}), "GraSP w * Hg (Wang et al. 2020)"),
    ScoreInfo("synflow", frozenset({"model"}), "SynFlow |w * dR/dw|, data-free (Tanaka et al. 2020)"),
    ScoreInfo("random", frozenset({"rng"}), "i.i.d. random scores (uniform, or normal)"),
)}

ALLOCATIONS: dict[str, str] = {
    "global": "one ranking over every layer (Global MP; LAMP's global threshold)",
    "global_filters": "whole output filters ranked over every layer (structured)",
    "uniform": "every layer pruned by the same fraction",
    "uniform_plus": "uniform, first conv dense, last layer >= 20 % (Gale et al. 2019)",
    "erk": "Erdos-Renyi-Kernel layer densities (Evci et al. 2020)",
}


def add_score(info: ScoreInfo) -> None:
    """A new score's catalog entry (plugins); a name already taken is an error."""
    if info.name in SCORES and SCORES[info.name] != info:
        raise ValueError(f"score {info.name!r} is already registered")
    SCORES[info.name] = info


def add_allocation(name: str, description: str) -> None:
    if name in ALLOCATIONS and ALLOCATIONS[name] != description:
        raise ValueError(f"allocation {name!r} is already registered")
    ALLOCATIONS[name] = description
