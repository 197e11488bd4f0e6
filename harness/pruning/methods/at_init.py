"""Pruning at initialisation: choose the mask once, on the freshly initialised model, then train
the sparse network with the mask held fixed (SNIP, random; DPF's SNIP baseline).

The score (a registered score: it declares what it needs) is computed on ``batches`` training
mini-batches drawn from the run's seed, with the model in ``mode`` (train or eval), and the
allocation keeps ``round((1 - target_sparsity) * N)`` entries over the whole prunable set. Rows
are on the ``epoch`` axis, like every single-stage procedure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch.nn import functional as F

from harness.config.expand import RunSpec
from harness.pruning import scores
from harness.pruning.masks import MaskSet
from harness.pruning.methods.stage import FixedMask, SingleStage, run_stage
from harness.train import stage_seed


@dataclass(frozen=True)
class AtInitParams:
    batches: int = 1  # mini-batches (of training.batch_size) the score sees; SNIP: one
    mode: Literal["train", "eval"] = "train"  # model mode while scoring (BN batch statistics or not)


class AtInit(SingleStage):
    name = "at_init"
    Params = AtInitParams
    needs_sparsity = True
    description = "mask chosen at initialisation, then the sparse network trains with it fixed"

    def check(self, p: AtInitParams, err) -> None:
        if p.batches < 1:
            err("batches", f"expected a positive number of mini-batches, got {p.batches}")



    def selection_cost(self, spec: RunSpec, n_train: int) -> int:
        needs = scores.SCORES[spec.score].needs
        return spec.params.batches * spec.training.batch_size if "batches" in needs else 0

    def summary(self, spec: RunSpec) -> str:
        p = spec.params
        return f"{spec.score} scores at init ({p.batches} batch(es), {p.mode} mode), {spec.allocation} allocation, fixed mask"

    def run(self, spec: RunSpec, ctx, d: Path) -> list[dict]:
        from harness.experiment import fresh_model, get_data

        p, t = spec.params, spec.training
        data = get_data(spec.dataset, ctx)
        model = fresh_model(spec, ctx.torch_device)
        masks = MaskSet.for_model(model, spec.prunable)
        if not (d / "checkpoint.pt").exists():  # a resumed run gets its masks from the checkpoint
            gen = torch.Generator(device=data.device).manual_seed(stage_seed(spec.seed, "score"))

            def batches():
                it = data.train_batches(gen, t.batch_size, t.drop_last)
                return (b for _, b in zip(range(p.batches), it))

            model.train(p.mode == "train")
            inputs = masks.score_inputs(model, batches=batches, loss=F.cross_entropy, generator=gen)
            masks.select_(scores.compute(spec.score, inputs), spec.allocation,
                          density=1.0 - (spec.target_sparsity or 0.0), eligible="all")
            model.train()
            model.zero_grad(set_to_none=True)
        return run_stage(spec, ctx, d, model, masks, FixedMask(masks))
