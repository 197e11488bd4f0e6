"""The registry: procedures (objects that own a run) and methods (names in the papers' vocabulary).

A method is a procedure with a score, an allocation and parameter overrides; adding one is a
line here when its procedure, score and allocation exist. A manifest can define more under its
own ``methods:`` key (a registered method plus parameters).
"""

from __future__ import annotations

from harness.pruning.methods.base import Method, Procedure
from harness.pruning.methods.gradual import Gradual
from harness.pruning.methods.iterative import Iterative

PROCEDURES: dict[str, Procedure] = {p.name: p for p in (Iterative(), Gradual())}

METHODS: dict[str, Method] = {
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

__all__ = ["METHODS", "PROCEDURES", "Method", "Procedure"]
