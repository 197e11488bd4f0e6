"""Tracker -> :data:`Results`: what every run recorded, read once (the report's only MLflow use).

A run records rows on up to three axes: ``round`` (iterative pruning; 0 is the dense model),
``epoch`` (single-stage procedures), ``retrain`` (per-epoch values of a round's recorded retraining,
AP) and ``final`` (index 0: the run's final values; every finished run has one). Per-layer values
(``<key>/<layer>`` in the tracker) stay in MLflow and the run directories, not in the report. A diverged run (loss or weights became non-finite) is FAILED and tagged
``prunebench.diverged`` / ``prunebench.diverged_step``; it keeps the rows it logged before.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.pruning.methods import procedure

DIVERGED_TAG = "prunebench.diverged"
DIVERGED_STEP_TAG = "prunebench.diverged_step"

Rows = dict[str, dict[int, dict[str, float]]]
"""axis -> index -> metric -> value."""


@dataclass(frozen=True)
class RunResult:
    """One run as the tracker has it."""

    rows: Rows = field(default_factory=dict)
    status: str = "FINISHED"  # MLflow's: RUNNING, FINISHED, FAILED, KILLED
    diverged: bool = False
    diverged_step: int | None = None

    def row(self, axis: str, index: int) -> dict[str, float] | None:
        return self.rows.get(axis, {}).get(index)

    @property
    def complete(self) -> bool:
        """Finished (it has its final row) or diverged: nothing more will come."""
        return self.diverged or self.row("final", 0) is not None


Results = dict[str, RunResult]
"""RunSpec.id -> RunResult, for every spec that has a tracked run."""


class Tracker(Protocol):
    def find(self, paper: str, run_id: str) -> Any: ...

    def rows(self, mlflow_run_id: str) -> Rows: ...


def planned_rows(spec: Any) -> list[tuple[str, int]]:
    """The rows a finished run of ``spec`` logs (its procedure knows): the one place we ask."""
    return list(procedure(spec).planned_rows(spec))


def finite(values: Iterable[Any]) -> list[float]:
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


def _step(text: Any) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def collect(specs: Iterable[Any], tracker: Tracker) -> Results:
    """Every spec's run, rows and status; specs without a tracked run are left out."""
    out: Results = {}
    for spec in specs:
        run = tracker.find(spec.paper, spec.id)
        if run is None:
            continue
        tags = dict(getattr(getattr(run, "data", None), "tags", None) or {})
        rows = tracker.rows(run.info.run_id) or {}
        out[spec.id] = RunResult(
            rows={str(axis): {int(i): {str(k): float(v) for k, v in metrics.items() if "/" not in str(k)}
                              for i, metrics in by_index.items()}
                  for axis, by_index in rows.items()},
            status=str(run.info.status),
            diverged=str(tags.get(DIVERGED_TAG, "")).lower() == "true",
            diverged_step=_step(tags.get(DIVERGED_STEP_TAG)),
        )
    return out
