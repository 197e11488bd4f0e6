"""The dense baseline: the model trained from its initialisation with nothing pruned, on the
same recipe and with the same epoch rows and checkpoints as the single-stage procedures."""

from __future__ import annotations

from dataclasses import dataclass

from harness.config.specs import RunSpec
from harness.pruning.methods.base import SingleStage, Stage


@dataclass(frozen=True)
class DenseParams:
    pass


class Dense(SingleStage):
    name = "dense"
    Params = DenseParams
    description = "no pruning: the dense baseline on the same training recipe"

    def run(self, spec: RunSpec, stage: Stage) -> None:
        stage.begin_fresh()
        stage.train_stage(None)  # no mask update: every entry kept
