"""Gradual pruning during training (Zhu & Gupta 2017): DPF's "Incremental" baseline.

The model trains from its initialisation for ``training.pretrain``; every ``update_every`` steps
in [start, end] the mask is recomputed to the cubic schedule's target over the still-unmasked
weights (nested: no regrowth), and masked weights are re-zeroed after every optimizer step.
Rows are on the ``epoch`` axis; ``mask_updates`` counts the updates that pruned something.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.config.expand import RunSpec
from harness.pruning.masks import MaskSet
from harness.pruning.methods.base import Procedure
from harness.pruning.methods.stage import StageHook, eval_epochs, run_stage
from harness.pruning.schedules import cubic_sparsity
from harness.units import duration_steps, is_duration, steps_per_epoch


@dataclass(frozen=True)
class GradualParams:
    start: str  # duration: first mask update
    end: str  # duration: last mask update (the target is reached here)
    update_every: int  # steps between mask updates
    initial_sparsity: float = 0.0


class GradualHook(StageHook):
    """Every ``every`` steps in [start, end] the mask is recomputed to the cubic target over the
    still-unmasked weights (no regrowth); masks are re-applied after every optimizer step."""

    def __init__(self, masks: MaskSet, score: str, allocation: str, final_sparsity: float,
                 start: int, end: int, every: int, initial_sparsity: float = 0.0):
        self.masks, self.score, self.allocation = masks, score, allocation
        self.final, self.start, self.end, self.every, self.initial = final_sparsity, start, end, every, initial_sparsity
        self.updates = 0

    def target_density(self, t: int) -> float:
        return 1.0 - cubic_sparsity(t, self.final, self.start, self.end, self.initial)

    def after_optimizer_step(self, step: int) -> None:
        t = step + 1
        if t % self.every == 0 and self.start <= t <= self.end:
            from harness.pruning import scores

            stats = self.masks.select_(scores.compute(self.score, self.masks.score_inputs()), self.allocation,
                                       density=min(self.target_density(t), self.masks.density()))
            self.updates += stats["pruned"] > 0
        self.masks.apply_()

    def state_dict(self) -> dict:
        return {"updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.updates = state["updates"]

    def metrics(self) -> dict:
        return {"mask_updates": self.updates}


class Gradual(Procedure):
    name = "gradual"
    Params = GradualParams
    axis = "epoch"
    needs_sparsity = True
    description = "train from scratch while the mask follows the Zhu & Gupta cubic schedule"

    def check(self, p: GradualParams, err) -> None:
        for name in ("start", "end"):
            if not is_duration(getattr(p, name)):
                err(name, f"expected a duration like '50000it' or '300ep', got {getattr(p, name)!r}")
        if p.update_every < 1:
            err("update_every", "expected a positive integer")
        if not 0 <= p.initial_sparsity < 1:
            err("initial_sparsity", f"expected a sparsity in [0, 1), got {p.initial_sparsity}")

    def planned_rows(self, spec: RunSpec) -> list[tuple[str, int]]:
        from harness.config import train_size

        t = spec.training
        spe = steps_per_epoch(train_size(spec.dataset), t.batch_size, t.drop_last)
        return [("epoch", e) for e in sorted(eval_epochs(spec, spe, duration_steps(t.pretrain, spe)))] + [("final", 0)]

    def images(self, spec: RunSpec, n_train: int) -> tuple[int, int]:
        t = spec.training
        spe = steps_per_epoch(n_train, t.batch_size, t.drop_last)
        return 0, duration_steps(t.pretrain, spe) * t.batch_size

    def summary(self, spec: RunSpec) -> str:
        p = spec.params
        return f"cubic to sparsity {spec.target_sparsity:g} from {p.start} to {p.end}, mask every {p.update_every} it"

    def run(self, spec: RunSpec, ctx, d: Path) -> list[dict]:
        from harness.experiment import fresh_model, get_data

        p, t = spec.params, spec.training
        data = get_data(spec.dataset, ctx)
        model = fresh_model(spec, ctx.torch_device)
        masks = MaskSet.for_model(model, spec.prunable)
        spe = steps_per_epoch(data.n_train, t.batch_size, t.drop_last)
        hook = GradualHook(masks, spec.score, spec.allocation, spec.target_sparsity or 0.0,
                           duration_steps(p.start, spe), duration_steps(p.end, spe), p.update_every,
                           p.initial_sparsity)
        return run_stage(spec, ctx, d, model, masks, hook)


