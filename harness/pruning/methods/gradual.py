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

``schedule`` names the sparsity schedule (:data:`harness.pruning.schedules.SCHEDULES`): ``cubic`` (the papers'),
or one a plugin registered; it gets the same settings. Rows are on the ``epoch`` axis.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.config.specs import RunSpec
from harness.pruning.methods.base import SingleStage, Stage
from harness.pruning.schedules import SCHEDULES
from harness.pruning.steps import Reselect
from harness.units import is_duration


@dataclass(frozen=True)
class GradualParams:
    end: str  # t_end: the target sparsity is reached here (DPF/INCHEON: the second LR milestone)
    update_every: int  # mask update period in iterations (DPF: 16)
    start: str = "0it"
    initial_sparsity: float = 0.0
    feedback: bool = False  # DPF: regrowth + straight-through gradient
    freeze_after_end: bool = True  # INCHEON: no mask update after t_end
    schedule: str = "cubic"  # a name of harness.pruning.schedules.SCHEDULES


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
        if p.schedule not in SCHEDULES:
            err("schedule", f"unknown schedule '{p.schedule}' (expected one of: {', '.join(sorted(SCHEDULES))})")

    def summary(self, spec: RunSpec) -> str:
        p = spec.params
        kind = "DPF feedback (regrowth, straight-through)" if p.feedback else "nested (no regrowth)"
        return (f"cubic to the target from {p.start} to {p.end}, mask every {p.update_every} it"
                f"{', frozen after' if p.freeze_after_end else ', updated after'} {p.end}; {kind}")

    def run(self, spec: RunSpec, stage: Stage) -> None:
        p = spec.params
        schedule = SCHEDULES[p.schedule].factory(final_sparsity=spec.sparsity, start=stage.steps(p.start),
                                                 end=stage.steps(p.end), every=p.update_every,
                                                 initial_sparsity=p.initial_sparsity,
                                                 freeze_after_end=p.freeze_after_end)
        stage.begin_fresh()
        stage.train_stage(Reselect(schedule, spec.score, spec.allocation, feedback=p.feedback))
