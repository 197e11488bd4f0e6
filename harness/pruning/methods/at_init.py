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

PAGS (pags.md 4, the PAGS_SNIP reading) is this procedure with ``candidates > 1``: each candidate
mask is chosen by the base score on one fresh mini-batch mixed from the previous and the current
training batch (one permutation shared by images and labels, the first half kept), selected
exactly to the density, and scored by its mask-graph distance ``D`` (:mod:`harness.pruning.graph`,
switches in ``graph``) with the initial weights as edge weights; the candidate with the largest
``D`` is trained. A random base draws a new mask per candidate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch.nn import functional as F

from harness.config.expand import RunSpec
from harness.pruning import graph, scores
from harness.pruning.allocation import ALLOCATIONS, target_amount
from harness.pruning.masks import MaskSet
from harness.pruning.methods.stage import FixedMask, SingleStage, run_stage
from harness.paths import write_json
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
    candidates: int = 1  # PAGS: candidate masks sampled; the one with the largest graph distance is kept
    graph: graph.GraphParams = graph.GraphParams()  # PAGS: the distance's switches (pags.md 3.3)


def _score_options(p: AtInitParams) -> dict:
    """The switches of the scores that have them (GraSP, SynFlow)."""
    return {"grasp_temperature": p.grasp_temperature, "grasp_temperature_on": p.grasp_temperature_on,
            "synflow_output": p.synflow_output}


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
        if p.candidates < 1:
            err("candidates", f"expected a positive number of candidates, got {p.candidates}")
        if p.candidates > 1 and p.rounds != 1:
            err("candidates", "PAGS samples one-shot masks: expected rounds: 1 with candidates > 1")

    def selection_cost(self, spec: RunSpec, n_train: int) -> int:
        p = spec.params
        if "batches" not in scores.SCORES[spec.score].needs:
            return 0
        per_pass = n_train if p.batches is None else p.batches * spec.training.batch_size
        if p.candidates > 1:  # one mixed mini-batch per candidate
            per_pass = p.candidates * spec.training.batch_size
        passes = 2 if "hessian" in scores.SCORES[spec.score].needs else 1
        return per_pass * passes * p.rounds

    def summary(self, spec: RunSpec) -> str:
        p = spec.params
        data = "" if "batches" not in scores.SCORES[spec.score].needs else \
            f" on {'the whole training split' if p.batches is None else f'{p.batches} batch(es)'} ({p.mode} mode)"
        rounds = f", {p.rounds} rounds" if p.rounds > 1 else ""
        draw = ", Bernoulli draws" if p.draw == "bernoulli" else ""
        if p.candidates > 1:
            g = p.graph
            data = f", each scored on one mixed batch ({p.mode} mode)" if data else ""
            return (f"PAGS: {p.candidates} {spec.score} candidates{data}{draw}, {spec.allocation} allocation, the "
                    f"largest graph distance kept ({g.variant}, from {g.reference}), fixed mask")
        return f"{spec.score} scores at init{data}{rounds}, {spec.allocation} allocation{draw}, fixed mask"

    def choose_mask(self, spec: RunSpec, model, masks: MaskSet, data, gen: torch.Generator) -> dict:
        """Score and select, round after round (all entries eligible each time); with candidates,
        PAGS. Returns what the choice measured (PAGS: every candidate's distance, the chosen one)."""
        p, t = spec.params, spec.training
        density = 1.0 - (spec.target_sparsity or 0.0)
        if p.candidates > 1:
            return self._pags(spec, model, masks, data, gen, density)

        def batches():
            if p.batches is None:  # one pass over the (shuffled) training split, partial last batch kept
                return data.train_batches(gen, t.batch_size, drop_last=False)
            return (b for _, b in zip(range(p.batches), data.train_batches(gen, t.batch_size, t.drop_last)))

        inputs = masks.score_inputs(model, batches=batches, loss=F.cross_entropy, generator=gen,
                                    options=_score_options(p))
        model.train(p.mode == "train")
        try:
            for r in range(1, p.rounds + 1):
                s = scores.compute(spec.score, inputs)
                if p.draw == "bernoulli":
                    self._bernoulli(masks, s, spec.allocation, density, gen)
                else:  # every round re-scores all entries against the initial weights (pruned ones can return)
                    masks.select_(s, spec.allocation, density=density ** (r / p.rounds), eligible="all")
            masks.apply_()
        finally:
            model.train()
            model.zero_grad(set_to_none=True)
        return {}

    def _pags(self, spec: RunSpec, model, masks: MaskSet, data, gen: torch.Generator, density: float) -> dict:
        p, t = spec.params, spec.training

        def stream():  # fresh, reshuffled batches (pags.md defect 12)
            while True:
                yield from data.train_batches(gen, t.batch_size, drop_last=True)

        batches = stream()
        weights = {n: w.detach().clone() for n, w in masks.params.items()}  # theta_0: the edge weights
        init_coords = graph.reference_coordinates(weights, p.graph) if p.graph.reference == "init" else None
        options = _score_options(p)
        ones = {n: torch.ones_like(m) for n, m in masks.masks.items()}
        distances: list[float] = []
        best = None
        prev = next(batches)
        model.train(p.mode == "train")
        try:
            for _ in range(p.candidates):
                cur = next(batches)
                x, y = torch.cat([prev[0], cur[0]]), torch.cat([prev[1], cur[1]])
                keep = torch.randperm(x.shape[0], generator=gen, device=x.device)[: cur[0].shape[0]]
                mixed = (x[keep], y[keep])  # one permutation for images and labels (defect 11)
                masks.set_masks_(ones)
                inputs = masks.score_inputs(model, batches=lambda b=mixed: iter([b]), loss=F.cross_entropy,
                                            generator=gen, options=options)
                s = scores.compute(spec.score, inputs)
                if p.draw == "bernoulli":
                    self._bernoulli(masks, s, spec.allocation, density, gen)
                else:
                    masks.select_(s, spec.allocation, density=density, eligible="all")
                with torch.no_grad():  # back to theta_0 for the next candidate
                    for n, w in masks.params.items():
                        w.copy_(weights[n])
                dist = graph.distance(weights, masks.masks, params=p.graph, init_coordinates=init_coords)
                distances.append(dist)
                if best is None or dist > distances[best[0]]:
                    best = (len(distances) - 1, {n: m.clone() for n, m in masks.masks.items()})
                prev = cur
        finally:
            model.train()
            model.zero_grad(set_to_none=True)
        masks.set_masks_(best[1])
        masks.apply_()
        return {"pags_distances": distances, "pags_chosen": best[0]}

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
        chosen = d / "mask_choice.json"
        if not (d / "checkpoint.pt").exists():  # a resumed run gets its masks from the checkpoint
            gen = torch.Generator(device=data.device).manual_seed(stage_seed(spec.seed, "score"))
            write_json(chosen, self.choose_mask(spec, model, masks, data, gen))
        info = json.loads(chosen.read_text())
        extra = {"pags_distance": info["pags_distances"][info["pags_chosen"]]} if info else {}
        return run_stage(spec, ctx, d, model, masks, FixedMask(masks, extra))
