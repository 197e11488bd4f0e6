"""Pruning at initialisation: choose the mask on the freshly initialised model, then train the sparse network with
the mask held fixed (SNIP, iterative SNIP, GraSP, SynFlow, random, ERK; DPF's SNIP baseline; the PAGS paper's
baselines, and PAGS itself with ``candidates > 1``).

The choice is :func:`harness.pruning.pai.choose` (a :class:`~harness.pruning.steps.ChooseAtInit` decision; its
module docstring has the rules: scoring batches and mode, rounds, ``draw``, ``k_rule``, the PAGS sampler), checked
in lockstep with the PAGS predecessor's code by tests/reference/test_pai_reference.py and with PAGS_SNIP by
tests/reference/test_graph_reference.py; what it measured (PAGS: every candidate's distance) is kept in the run
folder. Rows are on the ``epoch`` axis.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from harness.config.schema import GraphParams
from harness.config.specs import RunSpec
from harness.pruning.catalog import SCORES
from harness.pruning.methods.base import SingleStage, Stage
from harness.pruning.steps import ChooseAtInit, Masked


@dataclass(frozen=True)
class AtInitParams:
    batches: int | None = 1  # mini-batches (of training.batch_size) per scoring pass; null: the whole split
    mode: Literal["train", "eval"] = "train"  # model mode while scoring (BN batch statistics or not)
    rounds: int = 1  # iterative scoring: round r keeps density^(r / rounds)
    draw: Literal["topk", "bernoulli"] = "topk"
    grasp_temperature: float = 200.0
    grasp_temperature_on: Literal["logits", "log_softmax"] = "logits"  # intended GraSP | the predecessor's code
    synflow_output: Literal["raw", "log_softmax"] = "raw"  # intended SynFlow | the predecessor's code
    k_rule: Literal["round", "iclr23"] = "round"  # top-k: exactly round(d N), ties by index | the code's threshold
    candidates: int = 1  # PAGS: candidate masks sampled; the one with the largest graph distance is kept
    graph: GraphParams = GraphParams()  # PAGS: the distance's switches (pags.md 3.3)


class AtInit(SingleStage):
    name = "at_init"
    Params = AtInitParams
    needs_sparsity = True
    description = "mask chosen at initialisation, then the sparse network trains with it fixed"

    def smoke_params(self, p: AtInitParams) -> AtInitParams:
        """Smoke runs: PAGS with 2 candidates, iterative scores in 3 rounds (the same final density), at most 2
        batches a scoring pass."""
        return dataclasses.replace(p, candidates=min(p.candidates, 2), rounds=min(p.rounds, 3),
                                   batches=2 if p.batches is None else min(p.batches, 2))

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
        info = SCORES[spec.score]
        if not info.data_passes:
            return 0
        per_pass = n_train if p.batches is None else p.batches * spec.training.batch_size
        if p.candidates > 1:  # one mixed mini-batch per candidate
            per_pass = p.candidates * spec.training.batch_size
        return per_pass * info.data_passes * p.rounds

    def summary(self, spec: RunSpec) -> str:
        p = spec.params
        data = "" if not SCORES[spec.score].data_passes else \
            f" on {'the whole training split' if p.batches is None else f'{p.batches} batch(es)'} ({p.mode} mode)"
        rounds = f", {p.rounds} rounds" if p.rounds > 1 else ""
        draw = ", Bernoulli draws" if p.draw == "bernoulli" else \
            (", the ICLR'23 code's k rule" if p.k_rule == "iclr23" and p.candidates == 1 else "")
        if p.candidates > 1:
            g = p.graph
            data = f", each scored on one mixed batch ({p.mode} mode)" if data else ""
            return (f"PAGS: {p.candidates} {spec.score} candidates{data}{draw}, {spec.allocation} allocation, the "
                    f"largest graph distance kept ({g.variant}, from {g.reference}), fixed mask")
        return f"{spec.score} scores at init{data}{rounds}, {spec.allocation} allocation{draw}, fixed mask"

    def run(self, spec: RunSpec, stage: Stage) -> None:
        stage.begin_fresh()
        info = stage.decide(ChooseAtInit(spec.params, spec.score, spec.allocation,
                                         density=spec.target_density))
        extra = {"pags_distance": info["pags_distances"][info["pags_chosen"]]} if info else {}
        stage.train_stage(Masked(extra))
