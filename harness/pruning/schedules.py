"""Sparsity schedules, one axis of a method (as jaxpruner's): when the mask changes and how dense it is then.

A schedule answers two questions about a run's optimizer steps (0-based ``t``): the target density at ``t``, and
whether a mask update follows (or precedes) step ``t``. Torch-free: procedures build them, the stage runner's
updates (:mod:`harness.pruning.updates`, :mod:`harness.pruning.reallocation`) follow them.

* :class:`Geometric`: iterative pruning's rounds, each removing ``rate`` of the remaining weights: density
  ``(1 - rate) ** k`` after round ``k`` (lamp.md 2.4; 0.8^k for the paper's 20 % per round).
* :class:`Cubic`: Zhu & Gupta's gradual schedule (dpf.md 1.3), ``s_t = s_f + (s_i - s_f)(1 - (t - t0)/(t_end -
  t0))^3``, the mask recomputed before the forward pass of every step ``t`` with ``(t + 1) % every == 0`` and
  ``t0 <= t < t_end`` (INCHEON's gating), frozen after ``t_end`` unless ``freeze_after_end`` is false.
* :class:`Periodic`: dynamic sparse training's re-allocations at a fixed density: every ``every`` steps (or the
  period of ``schedule`` in force), up to ``stop``, with each method's own timing (``timing``): DSR after the
  0-based step ``i`` with ``i > 0``, ``i % P == 0`` and ``i < stop`` (DSR main.py:627); Sparse Momentum after the
  ``t``-th step with ``t % P == 0``, ``t < total`` and ``t <= stop`` (SL re-allocates at the end of every epoch but
  the last); SET-ITOP the same but the last step included (ITOP core.py:219-221).
* :class:`Rounds`: pruning at initialisation's rounds, round ``r`` of ``R`` keeping ``density ** (r / R)``
  (pags.md 5.4: iterative SNIP and SynFlow use 100).

:data:`SCHEDULES` names the schedules the ``gradual`` procedure can follow (``pruning.gradual.schedule``): ``cubic``
built in, more registered by plugins (:func:`harness.plugins.register_schedule`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["Geometric", "Cubic", "Periodic", "Rounds", "cubic_sparsity", "ScheduleInfo", "SCHEDULES"]


def cubic_sparsity(step: int, final_sparsity: float, start_step: int, end_step: int,
                   initial_sparsity: float = 0.0) -> float:
    """``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t_end - t0)) ** 3``, equal to ``s_i`` before ``t0`` and to
    ``s_f`` at and after ``t_end``."""
    if end_step < start_step:
        raise ValueError(f"end_step ({end_step}) must be >= start_step ({start_step})")
    if step < start_step:
        return initial_sparsity
    if step >= end_step:
        return final_sparsity
    progress = (step - start_step) / (end_step - start_step)
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** 3


@dataclass(frozen=True)
class Geometric:
    rate: float  # fraction of the remaining weights each round removes
    rounds: int

    def density(self, k: int) -> float:
        """Remaining fraction after round ``k`` (0: dense)."""
        if not 0 <= k <= self.rounds:
            raise ValueError(f"round {k} is outside 0..{self.rounds}")
        return (1.0 - self.rate) ** k


@dataclass(frozen=True)
class Cubic:
    final_sparsity: float
    start: int  # step t0
    end: int  # step t_end: the target is reached here
    every: int  # update period in steps
    initial_sparsity: float = 0.0
    freeze_after_end: bool = True

    def density(self, t: int) -> float:
        return 1.0 - cubic_sparsity(t, self.final_sparsity, self.start, self.end, self.initial_sparsity)

    def is_update(self, t: int) -> bool:
        """Whether the mask is recomputed before the forward pass of step ``t``."""
        return (t + 1) % self.every == 0 and t >= self.start and (t < self.end or not self.freeze_after_end)


@dataclass(frozen=True)
class Periodic:
    every: int  # period in steps
    total: int  # the run's optimizer steps
    target_density: float  # held between re-allocations
    stop: int | None = None  # no re-allocation after it (steps); None: never stops
    timing: Literal["dsr", "sparse_momentum", "set"] = "sparse_momentum"
    schedule: tuple[tuple[int, int], ...] = ()  # (from step, period) pairs overriding ``every`` from that step on

    def period(self, step: int) -> int:
        every = self.every
        for start, value in sorted(self.schedule):
            if step >= start:
                every = value
        return every

    def is_update(self, step: int) -> bool:
        """Whether a re-allocation follows the 0-based optimizer step ``step``."""
        period = self.period(step)
        if self.timing == "dsr":
            return step != 0 and step % period == 0 and (self.stop is None or step < self.stop)
        t = step + 1
        if t % period != 0 or (self.stop is not None and t > self.stop):
            return False
        return self.timing == "set" or t < self.total

    def density(self, t: int) -> float:  # noqa: ARG002  (a fixed density)
        return self.target_density


@dataclass(frozen=True)
class Rounds:
    density_final: float
    rounds: int = 1

    def density(self, r: int) -> float:
        """Round ``r`` (from 1) keeps ``density ** (r / rounds)`` of the prunable set."""
        return self.density_final ** (r / self.rounds)


@dataclass(frozen=True)
class ScheduleInfo:
    """A named schedule of the ``gradual`` procedure: ``factory(final_sparsity, start, end, every, initial_sparsity,
    freeze_after_end)`` (steps) returns an object with ``density(t)`` and ``is_update(t)``."""

    factory: Callable
    description: str = ""


SCHEDULES: dict[str, ScheduleInfo] = {
    "cubic": ScheduleInfo(Cubic, "Zhu & Gupta's cubic, updates every `update_every` steps from start to end"),
}
