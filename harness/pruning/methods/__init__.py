"""The procedure registry (torch-free: configs are validated and grids planned with it): procedures (what a run's
stages are) and methods (names in the papers' vocabulary).

A method is a procedure with a score, an allocation and parameter overrides; adding one is a
line here when its procedure, score and allocation exist. A manifest can define more under its
own ``methods:`` key (a registered method plus parameters).
"""

from __future__ import annotations

from harness.config.specs import DenseSpec, RunSpec
from harness.pruning.methods.at_init import AtInit
from harness.pruning.methods.base import Method, Procedure
from harness.pruning.methods.cycles import Cycles
from harness.pruning.methods.dense import Dense
from harness.pruning.methods.dynamic import Dynamic
from harness.pruning.methods.gradual import Gradual
from harness.pruning.methods.iterative import Iterative, OneShot

PROCEDURES: dict[str, Procedure] = {p.name: p for p in (Iterative(), OneShot(), Gradual(), AtInit(), Dense(), Dynamic(),
                                                        Cycles())}

METHODS: dict[str, Method] = {
    # LAMP paper (Lee et al. 2021): five layerwise-sparsity rules under iterative pruning.
    "global": Method("iterative", "magnitude", "global", "global magnitude pruning"),
    "uniform": Method("iterative", "magnitude", "uniform", "every layer pruned by the same fraction"),
    "uniform_plus": Method("iterative", "magnitude", "uniform_plus",
                           "uniform, first conv dense, last layer >= 20% (Gale et al. 2019)"),
    "erk": Method("iterative", "magnitude", "erk", "Erdos-Renyi-Kernel layer densities (Evci et al. 2020)"),
    "lamp": Method("iterative", "lamp", "global", "LAMP scores with one global threshold"),
    # DPF paper (Lin et al. 2020) and its baselines (dpf.md sections 1 and 4).
    "dpf": Method("gradual", "magnitude", "global",
                  "DPF: global magnitude masks re-selected over all weights on the cubic schedule, "
                  "straight-through gradient to the dense weights", params={"feedback": True}),
    "dpf_structured": Method("gradual", "filter_l2", "global_filters",
                             "DPF, structured: whole conv filters ranked globally by L2 norm (dpf.md defect 2)",
                             params={"feedback": True}),
    "incremental": Method("gradual", "magnitude", "global",
                          "Zhu & Gupta gradual magnitude pruning on the cubic schedule, no regrowth (DPF without feedback)"),
    "one_shot": Method("one_shot", "magnitude", "global", "One-shot P+FT: train dense, prune once, fine-tune"),
    "snip": Method("at_init", "snip", "global", "SNIP: |g * w| on one mini-batch at initialisation, fixed mask"),
    # Pruning at initialisation (the PAGS paper's baselines, pags.md 5.4).
    "random": Method("at_init", "random", "global", "random scores, global top-k (per-layer density ~ uniform)"),
    "erk_random": Method("at_init", "random", "erk", "ERK layer densities, independent Bernoulli draws per entry",
                         params={"draw": "bernoulli"}),
    "iter_snip": Method("at_init", "snip", "global", "SNIP re-scored over all entries for 100 rounds, density d^(r/100)",
                        params={"rounds": 100}),
    "grasp": Method("at_init", "grasp", "global", "GraSP: w * Hg, temperature 200 (Wang et al. 2020)"),
    "synflow": Method("at_init", "synflow", "global", "SynFlow, 100 data-free rounds (Tanaka et al. 2020)",
                      params={"rounds": 100}),
    "dsr": Method("dynamic", "magnitude", "global", "DSR: adaptive global magnitude threshold, random regrowth "
                  "spread by surviving weights (Mostafa & Wang 2019)", params={"regrow": "random"}),
    "sparse_momentum": Method("dynamic", "magnitude", "global", "Sparse Momentum: per-layer magnitude pruning, "
                              "momentum-guided regrowth (Dettmers & Zettlemoyer 2019)", params={"regrow": "momentum"}),
    # PAGS paper's topology analysis (pags.md 1.1): dynamic sparse training in the ITOP framework (Liu et al. 2021).
    "itop": Method("dynamic", "magnitude", "erk", "SET in the ITOP framework: per-layer magnitude death at a "
                   "cosine-decayed rate, random regrowth in the same layer, ERK Bernoulli start (Liu et al. 2021)",
                   params={"regrow": "set", "initial": "erk"}),
    "dense": Method("dense", "magnitude", "global", "no pruning (dense baseline)"),
    # AP paper (Liu et al. 2023): the released code's cycles; AP is the procedure's ap_rate modifier (ap.md 2.2).
    "cycles_global": Method("cycles", "magnitude", "global",
                            "AP-style cycles, global magnitude base step (IMP/LTH with mode lt); AP when ap_rate > 0"),
    "cycles_lamp": Method("cycles", "lamp", "global", "AP-style cycles, LAMP base step; AP when ap_rate > 0"),
    "cycles_dpf": Method("cycles", "magnitude", "global",
                         "AP-style cycles, DPF base: each cycle's first training with DPF's feedback toward the "
                         "cycle's target (global magnitude re-selection over DPF's own prunable set, the conv "
                         "weights); AP when ap_rate > 0", params={"decision": "dpf"}),
}

__all__ = ["METHODS", "PROCEDURES", "Method", "Procedure", "procedure", "dense_spec"]


def procedure(spec: RunSpec) -> Procedure:
    """The procedure that runs ``spec``."""
    return PROCEDURES[spec.procedure]


def dense_spec(spec: RunSpec) -> DenseSpec | None:
    """The dense pre-training ``spec`` starts from (None if it trains from scratch)."""
    return PROCEDURES[spec.procedure].dense_spec(spec)
