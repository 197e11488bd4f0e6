"""What a procedure asks the stage runner to do to the mask (torch-free descriptions; the runner carries them out
with the toolkit: :mod:`harness.pruning.updates`, :mod:`harness.pruning.reallocation`, :mod:`harness.pruning.pai`,
:mod:`harness.pruning.ap`).

*Updates* act during a training, step by step:

* :class:`Masked`: the mask is fixed; masked weights are re-zeroed after every optimizer step (a retraining, or a
  mask chosen before training; ``extra``: constant values reported with every row);
* :class:`Reselect`: the mask follows a schedule (:class:`~harness.pruning.schedules.Cubic`, or a plugin's), re-selected by a score
  and an allocation: nested over the unmasked entries (Zhu & Gupta), or with DPF's ``feedback`` over every entry
  from the dense weights, the forward pass on ``m * w`` and the step on the dense ``w``; ``only`` restricts the
  selection to a part of the prunable set (the rest keeps its mask, re-zeroed after every step);
* :class:`Reallocate`: dynamic sparse training at a fixed density (DSR, Sparse Momentum, SET-ITOP) on a
  :class:`~harness.pruning.schedules.Periodic` schedule, from a random start drawn at the run's beginning.

*Decisions* act between trainings and return what they counted:

* :class:`Prune`: one nested pruning step: ``rate`` of the unmasked entries removed by a score and an allocation;
* :class:`Reselection`: one re-selection to an absolute density (DPF's last selection of a decision training);
* :class:`ChooseAtInit`: the mask chosen on the freshly initialised model (SNIP, iterSNIP, GraSP, SynFlow, random,
  ERK Bernoulli draws; PAGS with candidates);
* :class:`CyclePrune`: AP's cycle step: the base method's step, then the AP modifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from harness.pruning.schedules import Periodic

__all__ = ["Masked", "Reselect", "Reallocate", "Prune", "Reselection", "ChooseAtInit", "CyclePrune", "Update",
           "Decision"]


# --------------------------------------------------------------------------- updates (during a training)


@dataclass(frozen=True)
class Masked:
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Reselect:
    schedule: Any  # Cubic, or a plugin's schedule: density(t) and is_update(t)
    score: str
    allocation: str
    feedback: bool = False
    only: Literal["all", "conv"] = "all"  # the part of the prunable set the schedule re-selects


@dataclass(frozen=True)
class Reallocate:
    params: Any  # the dynamic procedure's parameters (regrow, prune rates, threshold, ...)
    schedule: Periodic


Update = Masked | Reselect | Reallocate


# --------------------------------------------------------------------------- decisions (between trainings)


@dataclass(frozen=True)
class Prune:
    score: str
    allocation: str
    rate: float  # fraction of the unmasked entries removed
    stream: str = "score"  # a score that needs data draws its batches from stage_seed(seed, stream)
    batches: int = 1  # training mini-batches such a score sees


@dataclass(frozen=True)
class Reselection:
    score: str
    allocation: str
    density: float  # of the selected part: round(density * N) entries kept
    only: Literal["all", "conv"] = "all"


@dataclass(frozen=True)
class ChooseAtInit:
    params: Any  # the at-init procedure's parameters (batches, mode, rounds, draw, candidates, graph, ...)
    score: str
    allocation: str
    density: float


@dataclass(frozen=True)
class CyclePrune:
    score: str
    allocation: str
    base_rate: float  # of the alive entries, removed by the base method (unless `base_done`)
    ap_rate: float  # n_ap = int(ap_rate * alive before the base step); 0: no AP
    reference: Any  # the weights AP measures movement from (name -> tensor)
    stream: str = "score"  # a base score that needs data draws its batches from stage_seed(seed, stream)
    base_done: dict | None = None  # the base step already happened (a DPF decision training): its counts
    alive_before: int | None = None  # with base_done: the alive count before it


Decision = Prune | Reselection | ChooseAtInit | CyclePrune
