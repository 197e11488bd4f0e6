"""Pruning methods: a name in the papers' vocabulary -> (procedure, score, allocation).

A *procedure* drives training (iterative prune -> retrain, gradual pruning during training, ...);
a *score* ranks weights (``harness.pruning.scores``); an *allocation* spreads the budget over
layers (``harness.pruning.allocation``). Adding a method is one line here when its procedure,
score and allocation exist.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Procedure:
    name: str
    needs_dense: bool  # starts from a shared dense pre-trained model
    needs_sparsity: bool  # the grid gives it a target sparsity
    description: str


@dataclass(frozen=True)
class Method:
    procedure: str
    score: str
    allocation: str
    description: str


PROCEDURES = {
    "iterative": Procedure("iterative", True, False,
                           "dense pre-training, then rounds of prune -> retrain (optionally rewinding)"),
    "gradual": Procedure("gradual", False, True,
                         "train from scratch while the mask follows the Zhu & Gupta cubic schedule"),
}

METHODS = {
    # LAMP paper (Lee et al. 2021): five layerwise-sparsity rules under iterative pruning.
    "global": Method("iterative", "magnitude", "global", "global magnitude pruning"),
    "uniform": Method("iterative", "magnitude", "uniform", "every layer pruned by the same fraction"),
    "uniform_plus": Method("iterative", "magnitude", "uniform_plus",
                           "uniform, first conv dense, last layer >= 20% (Gale et al. 2019)"),
    "erk": Method("iterative", "magnitude", "erk", "Erdos-Renyi-Kernel layer densities (Evci et al. 2020)"),
    "lamp": Method("iterative", "lamp", "global", "LAMP scores with one global threshold"),
    # Zhu & Gupta (2017) gradual magnitude pruning; DPF's "Incremental" baseline.
    "gradual_magnitude": Method("gradual", "magnitude", "global",
                                "global magnitude masks on a cubic schedule, no regrowth"),
}
