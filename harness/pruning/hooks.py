"""What every mask update during a training is (:mod:`harness.pruning.updates`, :mod:`harness.pruning.reallocation`):
a step hook with checkpointed state, values for each row, and the weights a run is evaluated with."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from harness.train import StepHooks

__all__ = ["UpdateHook", "Reactivation", "masked_view"]


class UpdateHook(StepHooks):
    """A mask update inside a training: its state is checkpointed, its metrics join each row."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def metrics(self) -> dict:
        return {}

    def begin(self) -> None:
        """A fresh start of the training it updates (not a resumed one): e.g. draw the initial mask."""

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called once before training (e.g. Sparse Momentum reads the optimizer's momentum)."""

    def effective_weights(self):
        """A context in which the model holds the weights to evaluate (DPF: m * w)."""
        return contextlib.nullcontext()

    def finish(self) -> None:
        """After the last step: leave the model as the run's output."""

    def totals(self) -> dict:
        """Cumulative counts (mask updates, entries brought back) that no row resets."""
        return {}


class Reactivation:
    """Entries an update brought back (DPF, DSR, Sparse Momentum, SET-ITOP): in total, and since the previous row
    (``metrics`` reports and resets that count); checkpointed with the hook."""

    def __init__(self) -> None:
        self.total = 0
        self.reported = 0  # the total at the previous row

    def add(self, regrown: int) -> None:
        self.total += regrown

    def metrics(self) -> dict:
        out = {"reactivated": self.total - self.reported, "reactivated_total": self.total}
        self.reported = self.total
        return out

    def state_dict(self) -> dict:
        return {"reactivated_total": self.total, "reactivated_reported": self.reported}

    def load_state_dict(self, state: dict) -> None:
        self.total, self.reported = state["reactivated_total"], state["reactivated_reported"]


@contextlib.contextmanager
def masked_view(masks, hidden: bool):
    """The weights a run with hidden dense values (DPF's feedback, DSR) is evaluated with: ``m * w`` inside, the dense
    weights back after; nothing to do when masked weights are zero anyway (``hidden`` false)."""
    if not hidden:
        yield
        return
    masks.stash_dense_()
    try:
        yield
    finally:
        masks.restore_dense_()
