"""The dense baseline: the model trained from its initialisation with nothing pruned, on the
same recipe and with the same epoch rows and checkpoints as the single-stage procedures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.config.expand import RunSpec
from harness.pruning.masks import MaskSet
from harness.pruning.methods.stage import SingleStage, StageHook, run_stage


@dataclass(frozen=True)
class DenseParams:
    pass


class Dense(SingleStage):
    name = "dense"
    Params = DenseParams
    description = "no pruning: the dense baseline on the same training recipe"



    def run(self, spec: RunSpec, ctx, d: Path) -> list[dict]:
        from harness.experiment import fresh_model

        model = fresh_model(spec, ctx.torch_device)
        return run_stage(spec, ctx, d, model, MaskSet.for_model(model, spec.prunable), StageHook())
