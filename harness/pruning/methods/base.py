"""What every procedure is, and the method registry's entries (torch-free).

A *procedure* says what a run's stages are: its typed parameters (``Params``, read from ``pruning.<procedure name>``
of a manifest and from the method) and their checks, the rows it reports (and on which axis), its compute, its
shared dense pre-training, and ``run(spec, stage)``: the stages themselves, written against the stage runner's
handle (:class:`harness.stage.Stage`), which does the training, evaluation, checkpoints, resume and rows. What a
procedure does to a mask it describes (:mod:`harness.pruning.steps`, on a :mod:`harness.pruning.schedules`
schedule); the runner carries it out with the toolkit. Nothing outside a procedure's module tests its name.

A *method* is a name in a paper's vocabulary: a procedure with a score, an allocation and parameter overrides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.config.specs import DenseSpec, RunSpec, train_size
from harness.units import duration_steps, steps_per_epoch

# The stage runner procedures call down into (harness.stage.Stage). Not imported: the runner imports this registry,
# so procedures name it in annotations only, through this alias.
Stage = Any

__all__ = ["Stage", "Procedure", "SingleStage", "Method", "dense_of", "eval_epochs", "snapshot_steps"]


class Procedure:
    """Base class: subclasses set the class attributes and implement :meth:`run` and the planning methods."""

    name: ClassVar[str]
    Params: ClassVar[type]
    axis: ClassVar[str]  # the axis of its progress rows: "round" or "epoch"
    needs_sparsity: ClassVar[bool] = False  # the grid gives it a target sparsity
    description: ClassVar[str] = ""
    unit: ClassVar[str] = "round"  # what one of its units (Stage.units) is called in reports

    def smoke_params(self, p: Any) -> Any:
        """The parameters of a smoke run (``prunebench run --smoke``): by default the real ones."""
        return p

    def check(self, params: Any, err) -> None:
        """Semantic checks of the typed parameters; ``err(key, message)`` raises."""

    def dense_spec(self, spec: RunSpec) -> DenseSpec | None:
        """The shared dense pre-training this run starts from, if any."""
        return None

    def planned_rows(self, spec: RunSpec) -> list[tuple[str, int]]:
        """(axis, index) of every row a finished run reports, the final row last."""
        raise NotImplementedError

    def images(self, spec: RunSpec, n_train: int) -> tuple[int, int]:
        """Training images: (of the shared dense pre-training, of the run itself)."""
        raise NotImplementedError

    def selection_cost(self, spec: RunSpec, n_train: int) -> int:
        """Images passed forward and backward to choose masks (data-dependent scores)."""
        return 0

    def summary(self, spec: RunSpec) -> str:
        """One line for ``prunebench plan``."""
        return self.description

    def run(self, spec: RunSpec, stage: "Stage") -> None:
        """The run's stages, through ``stage`` (the runner's handle); the runner writes the rows."""
        raise NotImplementedError


def dense_of(spec: RunSpec, snapshot_step: int | None = None) -> DenseSpec:
    """The dense pre-training of ``spec``'s model, data, optimizer, schedule, batch, precision and seed, for
    ``training.pretrain`` steps, keeping the weights after ``snapshot_step`` steps too when asked (a rewind point)."""
    t = spec.training
    return DenseSpec(model=spec.model, num_classes=spec.num_classes, dataset=spec.dataset,
                     optimizer=t.optimizer, lr_schedule=t.lr_schedule, batch_size=t.batch_size,
                     drop_last=t.drop_last, steps=t.pretrain, precision=t.precision, seed=spec.seed,
                     snapshot_step=snapshot_step or None, channels_last=t.channels_last, compile=t.compile)


def eval_epochs(spec: RunSpec, spe: int, total_steps: int) -> set[int]:
    """Epoch numbers (from 1) after which a single-stage run is evaluated; the last one always is."""
    last = math.ceil(total_steps / spe)
    out = {last}
    out.update(max(1, math.ceil(duration_steps(d, spe) / spe)) for d in spec.eval.epochs)
    if spec.eval.every is not None:
        every = max(1, math.ceil(duration_steps(spec.eval.every, spe) / spe))
        out.update(range(every, last + 1, every))
    return {e for e in out if 1 <= e <= last}


def snapshot_steps(spec: RunSpec, spe: int, total_steps: int) -> list[int]:
    """Steps (counted from 1) after which a single-stage run takes a snapshot (``eval.snapshots``), in order."""
    if spec.eval.snapshots is None:
        return []
    every = max(1, duration_steps(spec.eval.snapshots, spe))
    return list(range(every, total_steps + 1, every))


class SingleStage(Procedure):
    """A procedure whose run is one training stage of ``training.pretrain`` from the initialisation: rows on the
    ``epoch`` axis at the evaluated epochs, ``snapshot`` rows every ``eval.snapshots``, then the final row."""

    axis = "epoch"

    def planned_rows(self, spec: RunSpec) -> list[tuple[str, int]]:
        t = spec.training
        spe = steps_per_epoch(train_size(spec.dataset), t.batch_size, t.drop_last)
        total = duration_steps(t.pretrain, spe)
        return ([("epoch", e) for e in sorted(eval_epochs(spec, spe, total))]
                + [("snapshot", k) for k in snapshot_steps(spec, spe, total)] + [("final", 0)])

    def images(self, spec: RunSpec, n_train: int) -> tuple[int, int]:
        t = spec.training
        return 0, duration_steps(t.pretrain, steps_per_epoch(n_train, t.batch_size, t.drop_last)) * t.batch_size


@dataclass(frozen=True)
class Method:
    procedure: str
    score: str
    allocation: str
    description: str
    params: dict = field(default_factory=dict)  # overrides of the procedure's parameters
