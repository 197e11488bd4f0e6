"""Iterative pruning: dense pre-training, then rounds of prune -> retrain (LAMP, IMP/LTH).

Each round removes ``prune_rate`` of the still-unmasked weights (nested masks, density
``(1 - prune_rate)^k``), optionally rewinds every parameter and buffer to a step of the dense
pre-training (``rewind_step``: 0 = the initialisation), and retrains for ``training.retrain``
with masked weights re-zeroed after every optimizer step. A checkpoint after every round makes
an interrupted run resume at its next round; rows are on the ``round`` axis (0 = dense).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from harness.config.schema import LRScheduleConfig, OptimizerConfig
from harness.config.specs import DenseSpec, RunSpec
from harness.pruning.methods.base import Procedure, Stage, dense_of
from harness.pruning.schedules import Geometric
from harness.pruning.steps import Prune
from harness.units import duration_steps, is_duration, steps_per_epoch


@dataclass(frozen=True)
class IterativeParams:
    RENAMED: ClassVar[dict[str, str]] = {"amount_per_round": "prune_rate"}  # its manifest key until 0.1.0

    prune_rate: float  # fraction of the remaining weights removed per round
    rounds: int
    rewind_step: int | None = None  # None: fine-tune the pruned weights; k: rewind to step k
    fresh_optimizer_each_round: bool = True


class Iterative(Procedure):
    name = "iterative"
    Params = IterativeParams
    axis = "round"
    description = "dense pre-training, then rounds of prune -> retrain (optionally rewinding)"

    def check(self, p: IterativeParams, err) -> None:
        if not 0 < p.prune_rate < 1:
            err("prune_rate", f"expected a fraction in (0, 1), got {p.prune_rate}")
        if p.rounds < 1:
            err("rounds", f"expected a positive integer, got {p.rounds}")
        if p.rewind_step is not None and p.rewind_step < 0:
            err("rewind_step", f"expected a step >= 0 or null, got {p.rewind_step}")

    def dense_spec(self, spec: RunSpec) -> DenseSpec:
        return dense_of(spec, snapshot_step=spec.params.rewind_step)

    def schedule(self, spec: RunSpec) -> IterativeParams:
        """The rounds this run prunes (its parameters, here)."""
        return spec.params

    def retraining(self, spec: RunSpec) -> tuple[str, OptimizerConfig, LRScheduleConfig]:
        """(duration, optimizer, LR schedule) of each round's retraining."""
        t = spec.training
        return t.retrain, t.optimizer, t.lr_schedule

    def planned_rows(self, spec: RunSpec) -> list[tuple[str, int]]:
        return [("round", k) for k in range(self.schedule(spec).rounds + 1)] + [("final", 0)]

    def images(self, spec: RunSpec, n_train: int) -> tuple[int, int]:
        t = spec.training
        spe = steps_per_epoch(n_train, t.batch_size, t.drop_last)
        return (duration_steps(t.pretrain, spe) * t.batch_size,
                duration_steps(self.retraining(spec)[0], spe) * t.batch_size * self.schedule(spec).rounds)

    def summary(self, spec: RunSpec) -> str:
        p = self.schedule(spec)
        rewind = "" if p.rewind_step is None else f", rewind to step {p.rewind_step}"
        return (f"{p.rounds} rounds of {100 * p.prune_rate:g}% -> "
                f"{100 * Geometric(p.prune_rate, p.rounds).density(p.rounds):.3g}% remaining{rewind}")

    def run(self, spec: RunSpec, stage: Stage) -> None:
        p = self.schedule(spec)
        retrain, optimizer, lr_schedule = self.retraining(spec)
        keep = not p.fresh_optimizer_each_round
        stage.begin_dense()  # round 0: the shared dense model
        rewind = stage.rewind_state(p.rewind_step) if p.rewind_step is not None else None
        for k in stage.units("round", range(1, p.rounds + 1), keep_optimizer=keep):
            span = stage.span(k)  # > 1 only for a smoke run's last round: it stands for the skipped ones too
            rate = p.prune_rate if span == 1 else 1.0 - (1.0 - p.prune_rate) ** span
            stage.decide(Prune(spec.score, spec.allocation, rate, stream=f"score/round{k}"))
            if rewind is not None:
                stage.load(rewind)  # every parameter and buffer back to the rewind point, times the mask
            res = stage.train(f"round{k}", retrain, optimizer=optimizer, lr_schedule=lr_schedule, keep_optimizer=keep)
            stage.evaluated_row("round", k, steps=res.steps)
        stage.finish()


@dataclass(frozen=True)
class OneShotParams:
    finetune: str  # duration of the fine-tuning after the one pruning step
    finetune_lr: float | None = None  # constant LR for it; None: training.optimizer and lr_schedule
    rewind_step: int | None = None
    fresh_optimizer_each_round: bool = True


class OneShot(Iterative):
    """One-shot prune + fine-tune (Han et al. 2015 style, DPF's "One-shot P+FT" baseline): the
    shared dense model (``training.pretrain``) is pruned once to the target sparsity, then
    fine-tuned for ``finetune`` with the mask fixed, at the constant ``finetune_lr`` if given.
    Rows: round 0 (dense), round 1, final."""

    name = "one_shot"
    Params = OneShotParams
    needs_sparsity = True
    description = "dense training, one pruning step to the target sparsity, fine-tuning with the mask fixed"

    def check(self, p: OneShotParams, err) -> None:
        if p.rewind_step is not None and p.rewind_step < 0:
            err("rewind_step", f"expected a step >= 0 or null, got {p.rewind_step}")
        if not is_duration(p.finetune):
            err("finetune", f"expected a duration like '30ep', got {p.finetune!r}")
        if p.finetune_lr is not None and p.finetune_lr <= 0:
            err("finetune_lr", f"expected a positive learning rate, got {p.finetune_lr}")

    def summary(self, spec: RunSpec) -> str:
        p = spec.params
        lr = f" at lr {p.finetune_lr:g}" if p.finetune_lr is not None else ""
        return f"dense model, one {spec.score} pruning step to the target, fine-tuning {p.finetune}{lr}"

    def retraining(self, spec: RunSpec) -> tuple[str, OptimizerConfig, LRScheduleConfig]:
        p, t = spec.params, spec.training
        if p.finetune_lr is None:
            return p.finetune, t.optimizer, t.lr_schedule
        return p.finetune, dataclasses.replace(t.optimizer, lr=p.finetune_lr), LRScheduleConfig("constant")

    def schedule(self, spec: RunSpec) -> IterativeParams:
        p = spec.params
        return IterativeParams(prune_rate=spec.sparsity, rounds=1, rewind_step=p.rewind_step,
                               fresh_optimizer_each_round=p.fresh_optimizer_each_round)
