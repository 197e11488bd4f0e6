"""Pruning at initialisation: choose the mask on the freshly initialised model, then train the
sparse network with the mask held fixed (SNIP, iterative SNIP, GraSP, SynFlow, random, ERK;
DPF's SNIP baseline; the PAGS paper's baselines).

The score (a registered score: it declares what it needs) is computed on ``batches`` training
mini-batches drawn from the run's seed (``null``: one full pass over the training split), with the
model in ``mode``. Over ``rounds`` rounds, round ``r`` re-scores every entry and keeps
``density^(r/rounds)`` of the prunable set (pags.md 5.4: iterative SNIP and SynFlow use 100); the
last round keeps exactly ``round(density * N)`` entries (``draw: topk``), or, with
``draw: bernoulli``, every entry is kept independently with its layer's probability from the
allocation (ERK as the PAGS predecessor draws it: the density is met in expectation, and the
realised one is what the rows report). Rows are on the ``epoch`` axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch.nn import functional as F

from harness.config.expand import RunSpec
from harness.pruning import scores
from harness.pruning.allocation import ALLOCATIONS, target_amount
from harness.pruning.masks import MaskSet
from harness.pruning.methods.stage import FixedMask, SingleStage, run_stage
from harness.train import stage_seed


@dataclass(frozen=True)
class AtInitParams:
    batches: int | None = 1  # mini-batches (of training.batch_size) per scoring pass; null: the whole split
    mode: Literal["train", "eval"] = "train"  # model mode while scoring (BN batch statistics or not)
    rounds: int = 1  # iterative scoring: round r keeps density^(r / rounds)
    draw: Literal["topk", "bernoulli"] = "topk"
    grasp_temperature: float = 200.0
    grasp_temperature_on: Literal["logits", "log_softmax"] = "logits"  # intended GraSP | the predecessor's code
    synflow_output: Literal["raw", "log_softmax"] = "raw"  # intended SynFlow | the predecessor's code


class AtInit(SingleStage):
    name = "at_init"
    Params = AtInitParams
    needs_sparsity = True
    description = "mask chosen at initialisation, then the sparse network trains with it fixed"

    def check(self, p: AtInitParams, err) -> None:
        if p.batches is not None and p.batches < 1:
            err("batches", f"expected a positive number of mini-batches or null (a full pass), got {p.batches}")
        if p.rounds < 1:
            err("rounds", f"expected a positive number of rounds, got {p.rounds}")
        if p.draw == "bernoulli" and p.rounds != 1:
            err("draw", "Bernoulli draws are one-shot: expected rounds: 1")
        if p.grasp_temperature <= 0:
            err("grasp_temperature", f"expected a positive temperature, got {p.grasp_temperature}")

    def selection_cost(self, spec: RunSpec, n_train: int) -> int:
        p = spec.params
        if "batches" not in scores.SCORES[spec.score].needs:
            return 0
        per_pass = n_train if p.batches is None else p.batches * spec.training.batch_size
        passes = 2 if "hessian" in scores.SCORES[spec.score].needs else 1
        return per_pass * passes * p.rounds

    def summary(self, spec: RunSpec) -> str:
        p = spec.params
        data = "" if "batches" not in scores.SCORES[spec.score].needs else \
            f" on {'the whole training split' if p.batches is None else f'{p.batches} batch(es)'} ({p.mode} mode)"
        rounds = f", {p.rounds} rounds" if p.rounds > 1 else ""
        draw = ", Bernoulli draws" if p.draw == "bernoulli" else ""
        return f"{spec.score} scores at init{data}{rounds}, {spec.allocation} allocation{draw}, fixed mask"

    def choose_mask(self, spec: RunSpec, model, masks: MaskSet, data, gen: torch.Generator) -> None:
        """Score and select, round after round (all entries eligible each time)."""
        p, t = spec.params, spec.training
        density = 1.0 - (spec.target_sparsity or 0.0)

        def batches():
            if p.batches is None:  # one pass over the (shuffled) training split, partial last batch kept
                return data.train_batches(gen, t.batch_size, drop_last=False)
            return (b for _, b in zip(range(p.batches), data.train_batches(gen, t.batch_size, t.drop_last)))

        inputs = masks.score_inputs(model, batches=batches, loss=F.cross_entropy, generator=gen,
                                    options={"grasp_temperature": p.grasp_temperature,
                                             "grasp_temperature_on": p.grasp_temperature_on,
                                             "synflow_output": p.synflow_output})
        model.train(p.mode == "train")
        try:
            for r in range(1, p.rounds + 1):
                s = scores.compute(spec.score, inputs)
                if p.draw == "bernoulli":
                    self._bernoulli(masks, s, spec.allocation, density, gen)
                else:
                    masks.select_(s, spec.allocation, density=density ** (r / p.rounds), eligible="all")
        finally:
            model.train()
            model.zero_grad(set_to_none=True)

    @staticmethod
    def _bernoulli(masks: MaskSet, s: list[torch.Tensor], allocation: str, density: float, gen) -> None:
        layers = masks.layers("all")
        counts = ALLOCATIONS[allocation](layers, s, target_amount(layers, density))
        new = {n: torch.rand(l.weight.shape, generator=gen, device=l.weight.device) < k / l.original_numel
               for n, l, k in zip(masks.params, layers, counts)}
        masks.set_masks_(new)
        masks.apply_()

    def run(self, spec: RunSpec, ctx, d: Path) -> list[dict]:
        from harness.experiment import fresh_model, get_data

        data = get_data(spec.dataset, ctx)
        model = fresh_model(spec, ctx.torch_device)
        masks = MaskSet.for_model(model, spec.prunable)
        if not (d / "checkpoint.pt").exists():  # a resumed run gets its masks from the checkpoint
            gen = torch.Generator(device=data.device).manual_seed(stage_seed(spec.seed, "score"))
            self.choose_mask(spec, model, masks, data, gen)
        return run_stage(spec, ctx, d, model, masks, FixedMask(masks))
