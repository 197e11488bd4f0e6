"""Pruning during training on the cubic schedule: Zhu & Gupta's gradual pruning (DPF's
"Incremental" baseline) and DPF, its feedback variant (Lin et al. 2020, dpf.md section 1).

The model trains from its initialisation for ``training.pretrain``. Before the forward pass of
every step ``t`` (0-based) with ``(t + 1) % update_every == 0`` and ``start <= t < end`` the mask
is recomputed to the cubic target ``s_t = s_f + (s_i - s_f)(1 - (t - start)/(end - start))^3``
(dpf.md 1.3, INCHEON's gating; after ``end`` the mask is frozen unless ``freeze_after_end`` is
false, in which case it keeps being re-selected at ``s_f``). Selection keeps exactly
``round(density * N)`` entries (deviation ``dpf_exact_k``).

* ``feedback: false`` (Incremental): nested selection over the still-unmasked weights (no
  regrowth); masked weights are re-zeroed after every optimizer step (gradient masked).
* ``feedback: true`` (DPF): the mask is re-selected over *all* weights from the dense weights, the
  forward/backward pass runs on the masked copy ``m * w`` and the step is applied to the dense
  ``w`` (straight-through: pruned weights keep receiving gradient and can come back). Evaluation
  sees ``m * w`` and leaves the dense weights untouched; the run's output is ``m * w``.
  ``reactivated`` counts the entries that came back since the previous row, ``reactivated_total`` in all.

Rows are on the ``epoch`` axis.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from harness.config.expand import RunSpec
from harness.pruning import scores
from harness.pruning.masks import MaskSet
from harness.pruning.methods.stage import Reactivation, SingleStage, StageHook, run_stage
from harness.pruning.schedules import cubic_sparsity
from harness.units import duration_steps, is_duration, steps_per_epoch


@dataclass(frozen=True)
class GradualParams:
    end: str  # t_end: the target sparsity is reached here (DPF/INCHEON: the second LR milestone)
    update_every: int  # mask update period in iterations (DPF: 16)
    start: str = "0it"
    initial_sparsity: float = 0.0
    feedback: bool = False  # DPF: regrowth + straight-through gradient
    freeze_after_end: bool = True  # INCHEON: no mask update after t_end


class CubicMaskHook(StageHook):
    """The cubic-schedule mask, with or without DPF's feedback."""

    def __init__(self, masks: MaskSet, score: str, allocation: str, final_sparsity: float, start: int, end: int,
                 every: int, initial_sparsity: float = 0.0, feedback: bool = False, freeze_after_end: bool = True):
        self.masks, self.score, self.allocation = masks, score, allocation
        self.final, self.start, self.end, self.every = final_sparsity, start, end, every
        self.initial, self.feedback, self.freeze = initial_sparsity, feedback, freeze_after_end
        self.updates = 0
        self.reactivation = Reactivation()

    def target_density(self, t: int) -> float:
        return 1.0 - cubic_sparsity(t, self.final, self.start, self.end, self.initial)

    def _update(self, t: int) -> None:
        inputs = self.masks.score_inputs()
        if self.feedback:  # re-select over all entries, scored on the dense weights
            stats = self.masks.select_(scores.compute(self.score, inputs, dense=True), self.allocation,
                                       density=self.target_density(t), eligible="all")
        else:  # nested: the newly pruned weights are zeroed at once (the gradient stays masked)
            stats = self.masks.select_(scores.compute(self.score, inputs), self.allocation,
                                       density=min(self.target_density(t), self.masks.density()))
            self.masks.apply_()
        self.updates += 1
        self.reactivation.add(stats["regrown"])

    def before_forward(self, step: int) -> None:
        due = (step + 1) % self.every == 0 and step >= self.start and (step < self.end or not self.freeze)
        if due:
            self._update(step)
        if self.feedback:
            self.masks.stash_dense_()  # forward and backward see m * w

    def before_optimizer_step(self, step: int) -> None:
        if self.feedback:
            self.masks.restore_dense_()  # the gradient at m * w updates the dense w

    def after_optimizer_step(self, step: int) -> None:
        if not self.feedback:
            self.masks.apply_()

    @contextlib.contextmanager
    def effective_weights(self):
        if not self.feedback:
            yield
            return
        self.masks.stash_dense_()
        try:
            yield
        finally:
            self.masks.restore_dense_()

    def finish(self) -> None:
        self.masks.apply_()  # the output is the sparse model m * w

    def state_dict(self) -> dict:
        return {"updates": self.updates, **self.reactivation.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates = state["updates"]
        self.reactivation.load_state_dict(state)

    def metrics(self) -> dict:
        out = {"mask_updates": self.updates}
        if self.feedback:
            out.update(self.reactivation.metrics())
        return out


class Gradual(SingleStage):
    name = "gradual"
    Params = GradualParams
    needs_sparsity = True
    description = "train from scratch while the mask follows the cubic schedule (Zhu & Gupta; DPF with feedback)"

    def check(self, p: GradualParams, err) -> None:
        for name in ("start", "end"):
            if not is_duration(getattr(p, name)):
                err(name, f"expected a duration like '50000it' or '300ep', got {getattr(p, name)!r}")
        if p.update_every < 1:
            err("update_every", "expected a positive integer")
        if not 0 <= p.initial_sparsity < 1:
            err("initial_sparsity", f"expected a sparsity in [0, 1), got {p.initial_sparsity}")



    def summary(self, spec: RunSpec) -> str:
        p = spec.params
        kind = "DPF feedback (regrowth, straight-through)" if p.feedback else "nested (no regrowth)"
        return (f"cubic to the target from {p.start} to {p.end}, mask every {p.update_every} it"
                f"{', frozen after' if p.freeze_after_end else ', updated after'} {p.end}; {kind}")

    def run(self, spec: RunSpec, ctx, d: Path) -> list[dict]:
        from harness.experiment import fresh_model, get_data

        p, t = spec.params, spec.training
        data = get_data(spec.dataset, ctx)
        model = fresh_model(spec, ctx.torch_device)
        masks = MaskSet.for_model(model, spec.prunable)
        spe = steps_per_epoch(data.n_train, t.batch_size, t.drop_last)
        hook = CubicMaskHook(masks, spec.score, spec.allocation, spec.target_sparsity or 0.0,
                             duration_steps(p.start, spe), duration_steps(p.end, spe), p.update_every,
                             p.initial_sparsity, p.feedback, p.freeze_after_end)
        return run_stage(spec, ctx, d, model, masks, hook)
