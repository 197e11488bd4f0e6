"""Dynamic sparse training at a fixed density: DSR (Mostafa & Wang 2019) and Sparse Momentum (Dettmers &
Zettlemoyer 2019), DPF's dynamic baselines (dpf.md section 4), and SET as the ITOP framework runs it (Liu et al.
2021), the PAGS paper's mask sampler (pags.md 1.1).

The run is one long stage from the seed's initialisation; the re-allocation is
:class:`harness.pruning.reallocation.ReallocationHook` (its docstring has every rule, with the references' file and
line) on a :class:`~harness.pruning.schedules.Periodic` schedule with each method's timing (``regrow`` picks the
method: ``random`` DSR, ``momentum`` Sparse Momentum, ``set`` SET-ITOP). Each follows its reference code step for
step; ``tests/reference/test_dynamic_reference.py`` runs it in lockstep with a transcription of that code. Rows are
on the ``epoch`` axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.config.specs import RunSpec
from harness.pruning.methods.base import SingleStage, Stage
from harness.pruning.schedules import Periodic
from harness.pruning.steps import Reallocate
from harness.units import is_duration


@dataclass(frozen=True)
class DynamicParams:
    regrow: Literal["random", "momentum", "set"]  # DSR | Sparse Momentum | SET as in ITOP
    update_every: str  # period between re-allocations (e.g. "100it", "1ep")
    initial: Literal["uniform", "erk"]  # layer densities of the initial random mask (ERK: ITOP's rule)
    prune_rate: float = 0.5  # SM, SET-ITOP: initial prune (death) rate, cosine-decayed per iteration
    prune_rate_min: float = 0.005  # SM, SET-ITOP: the cosine's floor (eta_min of SL core.py:31, ITOP core.py:23)
    prune_fraction: float = 0.0  # DSR: wanted fraction of the active weights pruned per re-allocation
    threshold: float = 0.001  # DSR: initial global magnitude threshold H (DSR main.py:473)
    tolerance: float = 0.1  # DSR: band around the wanted count before H adapts (DSR main.py:681-684)
    stop: str | None = None  # no re-allocation after this duration (DSR --stop-rewire-epoch)
    # [[from, every], ...]: from the duration `from` on, the period is `every` (DSR's
    # rewire_period_schedule, learning_schedules/*.yaml, main.py:476); empty: update_every throughout
    update_schedule: tuple[tuple[str, str], ...] = ()


class Dynamic(SingleStage):
    name = "dynamic"
    Params = DynamicParams
    needs_sparsity = True
    description = "dynamic sparse training at a fixed density: prune and regrow (DSR, Sparse Momentum, SET-ITOP)"

    def check(self, p: DynamicParams, err) -> None:
        for name in ("update_every", "stop"):
            value = getattr(p, name)
            if value is not None and not is_duration(value):
                err(name, f"expected a duration like '100it' or '1ep', got {value!r}")
        for entry in p.update_schedule:
            if not all(is_duration(v) for v in entry):
                err("update_schedule", f"expected [from, every] durations like ['25ep', '200it'], got {list(entry)!r}")
        if not 0 <= p.prune_rate < 1:
            err("prune_rate", f"expected a fraction in [0, 1), got {p.prune_rate}")
        if not 0 <= p.prune_rate_min <= p.prune_rate:
            err("prune_rate_min", f"expected a floor in [0, prune_rate], got {p.prune_rate_min}")
        if p.regrow == "random" and not 0 < p.prune_fraction < 1:
            err("prune_fraction", f"expected a fraction in (0, 1) for DSR, got {p.prune_fraction}")
        if p.threshold <= 0 or p.tolerance < 0:
            err("threshold", "expected a positive threshold and a tolerance >= 0")

    def summary(self, spec: RunSpec) -> str:
        p = spec.params
        what = {"random": "DSR (adaptive threshold, random regrowth)", "momentum": "Sparse Momentum",
                "set": "SET-ITOP (magnitude death, random growth)"}[p.regrow]
        return f"{what}: {p.initial} random mask at the target, re-allocated every {p.update_every}"

    def run(self, spec: RunSpec, stage: Stage) -> None:
        p = spec.params
        schedule = Periodic(every=max(1, stage.steps(p.update_every)), total=stage.steps(spec.training.pretrain),
                            target_density=spec.target_density,
                            stop=stage.steps(p.stop) if p.stop else None, timing=TIMING[p.regrow],
                            schedule=tuple((stage.steps(a), max(1, stage.steps(b))) for a, b in p.update_schedule))
        stage.begin_fresh()
        stage.train_stage(Reallocate(p, schedule))  # the initial random mask is drawn at the stage's start


TIMING = {"random": "dsr", "momentum": "sparse_momentum", "set": "set"}  # each method's re-allocation timing
