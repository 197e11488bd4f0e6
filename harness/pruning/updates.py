"""Mask updates during a training (the toolkit side of :mod:`harness.pruning.steps`): step hooks that keep a mask,
follow a schedule, or re-allocate it, with their checkpointed state and the values they report with every row.

* :class:`UpdateHook`: the base: a :class:`~harness.train.StepHooks` whose state is checkpointed and whose
  metrics join each row; ``effective_weights`` is the context in which the model holds the weights to evaluate
  (DPF, DSR: ``m * w``), ``finish`` leaves the model as the run's output;
* :class:`MaskedHook`: the mask fixed, masked weights re-zeroed after every optimizer step (one fused multiply);
* :class:`ReselectHook`: the mask re-selected on a :class:`~harness.pruning.schedules.Cubic` schedule: nested over
  the unmasked entries (Zhu & Gupta: the newly pruned weights zeroed at once, the gradient masked), or with DPF's
  feedback over every entry from the dense weights: before the forward pass the dense copy is kept and ``m * w``
  written into the weights, and before the optimizer step the dense ``w`` comes back, so the gradient taken at
  ``m * w`` updates every entry (straight-through) and pruned entries can return (dpf.md section 1).

:func:`build` turns a step description into its hook; :class:`~harness.pruning.reallocation.ReallocationHook`
(DSR, Sparse Momentum, SET-ITOP) is the third kind.
"""

from __future__ import annotations


import torch

from harness.pruning import scores
from harness.pruning.hooks import Reactivation, UpdateHook, masked_view
from harness.pruning.masks import MaskSet
from harness.pruning.reallocation import ReallocationHook
from harness.pruning.steps import Masked, Reallocate, Reselect, Update
from harness.train import HookChain

__all__ = ["UpdateHook", "Reactivation", "MaskedHook", "ReselectHook", "SplitHook", "ReallocationHook", "build"]


class MaskedHook(UpdateHook):
    """The mask held fixed: masked weights re-zeroed after every optimizer step. ``extra``: constant values of how
    the mask was chosen, reported with every row."""

    def __init__(self, masks: MaskSet, extra: dict | None = None):
        self.masks, self.extra = masks, dict(extra or {})

    def after_optimizer_step(self, step: int) -> None:
        self.masks.apply_()

    def metrics(self) -> dict:
        return dict(self.extra)


class ReselectHook(UpdateHook):
    """The mask on a cubic schedule (``update.schedule``), with or without DPF's feedback."""

    def __init__(self, masks: MaskSet, update: Reselect):
        self.masks, self.update = masks, update
        self.schedule = update.schedule
        self.updates = 0
        self.reactivation = Reactivation()

    def _update(self, t: int) -> None:
        u = self.update
        inputs = self.masks.score_inputs()
        if u.feedback:  # re-select over all entries, scored on the dense weights
            stats = self.masks.select_(scores.compute(u.score, inputs, dense=True), u.allocation,
                                       density=self.schedule.density(t), eligible="all")
        else:  # nested: the newly pruned weights are zeroed at once (the gradient stays masked)
            stats = self.masks.select_(scores.compute(u.score, inputs), u.allocation,
                                       density=min(self.schedule.density(t), self.masks.density()))
            self.masks.apply_()
        self.updates += 1
        self.reactivation.add(stats["regrown"])

    def before_forward(self, step: int) -> None:
        if self.schedule.is_update(step):
            self._update(step)
        if self.update.feedback:
            self.masks.stash_dense_()  # forward and backward see m * w

    def before_optimizer_step(self, step: int) -> None:
        if self.update.feedback:
            self.masks.restore_dense_()  # the gradient at m * w updates the dense w

    def after_optimizer_step(self, step: int) -> None:
        if not self.update.feedback:
            self.masks.apply_()

    def effective_weights(self):
        return masked_view(self.masks, self.update.feedback)

    def finish(self) -> None:
        self.masks.apply_()  # the output is the sparse model m * w

    def state_dict(self) -> dict:
        return {"updates": self.updates, **self.reactivation.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates = state["updates"]
        self.reactivation.load_state_dict(state)

    def metrics(self) -> dict:
        out = {"mask_updates": self.updates}
        if self.update.feedback:
            out.update(self.reactivation.metrics())
        return out

    def totals(self) -> dict:
        return {"mask_updates": self.updates, "reactivated_total": self.reactivation.total}


class SplitHook(UpdateHook):
    """A re-selection over a part of the prunable set (``Reselect.only``) while the rest keeps its mask, re-zeroed
    after every step; the whole set's masks follow each update of the part. The part's hook speaks for both."""

    def __init__(self, whole: MaskSet, part: ReselectHook, rest: MaskedHook):
        self.whole, self.part, self.rest = whole, part, rest
        self._chain = HookChain(part, rest)

    def _merge(self) -> None:
        self.whole.set_masks_({**self.rest.masks.masks, **self.part.masks.masks})

    def before_forward(self, step: int) -> None:
        before = self.part.updates
        self._chain.before_forward(step)
        if self.part.updates != before:
            self._merge()

    def before_optimizer_step(self, step: int) -> None:
        self._chain.before_optimizer_step(step)

    def after_optimizer_step(self, step: int) -> None:
        self._chain.after_optimizer_step(step)

    def effective_weights(self):
        return self.part.effective_weights()

    def finish(self) -> None:
        self.part.finish()
        self.rest.masks.apply_()

    def state_dict(self) -> dict:
        return self.part.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.part.load_state_dict(state)

    def metrics(self) -> dict:
        return self.part.metrics()

    def totals(self) -> dict:
        return self.part.totals()


def part(masks: MaskSet, names: list[str]) -> tuple[MaskSet, MaskSet]:
    """``masks`` split into the named tensors and the rest (sharing parameters; masks copied in)."""
    inside = MaskSet({n: masks.params[n] for n in names}, {n: masks.masks[n] for n in names})
    others = [n for n in masks.params if n not in inside.params]
    rest = MaskSet({n: masks.params[n] for n in others}, {n: masks.masks[n] for n in others})
    return inside, rest


def build(update: Update, masks: MaskSet, *, conv_names: list[str] | None = None,
          generator: torch.Generator | None = None) -> UpdateHook:
    """The hook that carries out ``update`` on ``masks``. ``conv_names``: the conv weights among them (for
    ``Reselect(only="conv")``); ``generator``: the run's mask generator (``Reallocate``'s random draws)."""
    if isinstance(update, Masked):
        return MaskedHook(masks, update.extra)
    if isinstance(update, Reselect):
        if update.only == "all":
            return ReselectHook(masks, update)
        inside, rest = part(masks, list(conv_names or []))
        return SplitHook(masks, ReselectHook(inside, update), MaskedHook(rest))
    if isinstance(update, Reallocate):
        return ReallocationHook(masks, update.params, schedule=update.schedule, generator=generator)
    raise TypeError(f"no mask update for {update!r}")
