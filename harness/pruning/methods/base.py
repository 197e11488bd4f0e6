"""What every procedure is, and the method registry's entries.

A *procedure* owns a run from start to finish: its stages, hooks and checkpoints, the rows it
reports (and on which axis), its planned rows and its compute estimate, and its typed
parameters (``Params``, read from ``pruning.<procedure name>`` of a manifest and from the
method). A *method* is a name in a paper's vocabulary: a procedure with a score, an allocation
and parameter overrides. Nothing outside a procedure's module tests its name.

Rows are plain dicts: ``{"axis": "round" | "epoch" | "snapshot" | "final", "index": int, <metric>: float, ...}``
(``snapshot`` rows: a single-stage run's mask and accuracy every ``eval.snapshots``, index = the step)
(``layer_density`` may ride along as a dict). Every finished run ends with one ``final`` row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from harness.config.expand import DenseSpec, RunSpec
    from harness.experiment import Context

AXES = ("round", "epoch", "snapshot", "final")


def row(axis: str, index: int, **metrics: Any) -> dict:
    if axis not in AXES:
        raise ValueError(f"unknown row axis {axis!r} (expected one of: {', '.join(AXES)})")
    return {"axis": axis, "index": int(index), **metrics}


def final_row(last: dict, **extra: Any) -> dict:
    """The final row: the last evaluated row's metrics, plus final-only values."""
    values = {k: v for k, v in last.items() if k not in ("axis", "index")}
    return row("final", 0, **values, **extra)


class Procedure:
    """Base class: subclasses set the class attributes and implement :meth:`run`."""

    name: ClassVar[str]
    Params: ClassVar[type]
    axis: ClassVar[str]  # the axis of its progress rows: "round" or "epoch"
    needs_sparsity: ClassVar[bool] = False  # the grid gives it a target sparsity
    description: ClassVar[str] = ""

    def check(self, params: Any, err) -> None:
        """Semantic checks of the typed parameters; ``err(key, message)`` raises."""

    def dense_spec(self, spec: "RunSpec") -> "DenseSpec | None":
        """The shared dense pre-training this run starts from, if any."""
        return None

    def planned_rows(self, spec: "RunSpec") -> list[tuple[str, int]]:
        """(axis, index) of every row a finished run reports, the final row last."""
        raise NotImplementedError

    def images(self, spec: "RunSpec", n_train: int) -> tuple[int, int]:
        """Training images: (of the shared dense pre-training, of the run itself)."""
        raise NotImplementedError

    def selection_cost(self, spec: "RunSpec", n_train: int) -> int:
        """Images passed forward and backward to choose masks (data-dependent scores)."""
        return 0

    def summary(self, spec: "RunSpec") -> str:
        """One line for ``prunebench plan``."""
        return self.description

    def run(self, spec: "RunSpec", ctx: "Context", run_dir: Path) -> list[dict]:
        raise NotImplementedError


@dataclass(frozen=True)
class Method:
    procedure: str
    score: str
    allocation: str
    description: str
    params: dict = field(default_factory=dict)  # overrides of the procedure's parameters

    @property
    def proc(self) -> Procedure:
        from harness.pruning.methods import PROCEDURES

        return PROCEDURES[self.procedure]
