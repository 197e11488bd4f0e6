"""Pruning cycles with an optional AP ("Activate-while-Pruning") step (ap.md 2.2).

One procedure, ``cycles``, runs the released code's cycle structure for *any* base method (the pruning step itself
is :func:`harness.pruning.ap.prune_cycle`, a :class:`~harness.pruning.steps.CyclePrune` decision): the
base pruning step is the method's own score and allocation through :meth:`MaskSet.prune_`
(nested over the still-unmasked entries: it removes ``round(base_rate * alive)`` of them), and AP is one
modifier applied after it,
:func:`ap_step`, switched off by ``ap_rate = 0`` (then the run is the plain base method). Per
run (ap.md 2.2, with the defects of ap.md 7 fixed)::

    cycle 0: the shared dense model (training.pretrain from the initialisation theta_init)  -> round 0
    for k in 1..cycles:
        theta_0 = fresh init from the (seed, cycle k) stream (reinit) | theta_init (lt);  * mask;
                  every parameter *and buffer* replaced, so BN running stats are reset
        train training.retrain, fresh optimizer and LR schedule, mask re-applied after every step
        n_ap = int(ap_rate * alive)          # counted BEFORE the base step
        base step: remove round(base_rate * alive) of the alive entries (torch.nn.utils.prune's count:
                   Python's round of the float product, half to even: 25 -> 4, 75 -> 14) by the method's score
                   + allocation; with decision
                   "dpf" the first training is DPF's on DPF's own prunable set, the conv weights (mask
                   re-selected over all conv entries on the cubic schedule, straight-through; BN gamma and the
                   linear weight keep their masks), ending at U - round(base_rate * U) of its U alive entries
        AP step:   among alive entries with theta_T < 0, remove the n_ap with the smallest
                   |theta_T - reference| (reference: theta_0 of this cycle), ties by index;
                   fewer candidates than n_ap: remove all of them (ap_guarded = 1, logged)
        reset to theta_0 * mask; recorded retraining: training.retrain, fresh optimizer and
        LR schedule, mask re-applied after every step, evaluated after every epoch   -> round k

Rows: on the ``round`` axis, round 0 the dense model, round k the recorded retraining's end
(its last epoch's evaluation: accuracies, losses, the harness-defined post-training dead-neuron rate on the test
set ``dead_neuron_rate``, and the paper's dynamic DNR during that epoch's training ``train_dnr``), with
densities over the maskable set (``density``), over conv + linear weights
(``density_conv_linear``) and over all parameters (``density_all_params``, from the mask;
``density_all`` counts nonzeros), the pruning counts of the cycle, and every epoch's metrics
(``epochs``: a list, kept in rows.jsonl and ``epochs.csv``; MLflow gets it as ``retrain/<metric>``). A
checkpoint after every cycle makes an interrupted run resume at its next cycle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from harness.config.specs import DenseSpec, RunSpec
from harness.pruning.methods.base import Procedure, Stage, dense_of
from harness.pruning.schedules import Cubic
from harness.pruning.steps import CyclePrune, Reselect, Reselection
from harness.units import duration_steps, is_duration, steps_per_epoch


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CyclesParams:
    cycles: int  # pruning cycles after the dense cycle 0 (AP code: prune_iterations 25 -> 24)
    mode: Literal["reinit", "lt"] = "reinit"  # fresh init every cycle | rewind to the original init
    base_rate: float = 0.2  # fraction of the alive entries the base method removes per cycle
    ap_rate: float = 0.0  # AP: n_ap = int(ap_rate * alive before the base step); 0 = no AP
    movement_reference: Literal["cycle_init", "original_init"] = "cycle_init"  # theta_0 of |theta_T - theta_0|
    # the cycle's first (decision) training: "masked" (the code: m_{k-1} re-applied after every step, then the
    # base method's nested step) | "dpf" (DPF as the base method: straight-through training with the mask of DPF's
    # own prunable set, the conv weights, re-selected over all its entries every `dpf_update_every` steps on the
    # cubic schedule from its density under m_{k-1} to this cycle's target, reached at `dpf_end`; the mask DPF ends
    # with is the base step; regrowth allowed; BN gamma and the linear weight keep their masks meanwhile)
    decision: Literal["masked", "dpf"] = "masked"
    dpf_update_every: int = 16
    dpf_end: str | None = None  # a duration within training.retrain; None: the end of the training


class Cycles(Procedure):
    name = "cycles"
    Params = CyclesParams
    unit = "cycle"
    axis = "round"
    description = ("AP-style cycles: (re)init, train, prune (base method, then optionally AP), reset to this cycle's "
                   "init, recorded retraining")

    def check(self, p: CyclesParams, err) -> None:
        if p.cycles < 1:
            err("cycles", f"expected a positive integer, got {p.cycles}")
        if not 0 < p.base_rate < 1:
            err("base_rate", f"expected a fraction in (0, 1), got {p.base_rate}")
        if not 0 <= p.ap_rate < 1:
            err("ap_rate", f"expected a fraction in [0, 1), got {p.ap_rate}")
        if p.base_rate + p.ap_rate >= 1:
            err("ap_rate", f"base_rate + ap_rate must stay below 1, got {p.base_rate + p.ap_rate}")
        if p.dpf_update_every < 1:
            err("dpf_update_every", f"expected a positive integer, got {p.dpf_update_every}")
        if p.dpf_end is not None and not is_duration(p.dpf_end):
            err("dpf_end", f"expected a duration like '32ep' or '5000it', got {p.dpf_end!r}")

    def dense_spec(self, spec: RunSpec) -> DenseSpec:
        """Cycle 0 (ap.md 2.2): the dense training of theta_init, shared by every method of a seed."""
        return dense_of(spec)

    def planned_rows(self, spec: RunSpec) -> list[tuple[str, int]]:
        return [("round", k) for k in range(spec.params.cycles + 1)] + [("final", 0)]

    def images(self, spec: RunSpec, n_train: int) -> tuple[int, int]:
        t = spec.training
        spe = steps_per_epoch(n_train, t.batch_size, t.drop_last)
        return (duration_steps(t.pretrain, spe) * t.batch_size,
                2 * spec.params.cycles * duration_steps(t.retrain, spe) * t.batch_size)

    def summary(self, spec: RunSpec) -> str:
        p = spec.params
        ap = f" + AP {100 * p.ap_rate:g}%" if p.ap_rate > 0 else ""
        base = f"DPF-trained {spec.score}/{spec.allocation}" if p.decision == "dpf" else f"{spec.score}/{spec.allocation}"
        return (f"{p.cycles} {p.mode} cycles of {base} {100 * p.base_rate:g}%{ap} -> "
                f"~{100 * (1 - p.base_rate - p.ap_rate) ** p.cycles:.3g}% remaining")

    def run(self, spec: RunSpec, stage: Stage) -> None:
        p, t = spec.params, spec.training
        stage.begin_dense(measures=("densities", "dnr_layers"))  # round 0: the dense cycle 0
        steps = stage.steps(t.retrain)
        for k in stage.units("round", range(1, p.cycles + 1)):
            # a smoke run's last cycle stands for the skipped ones too: its base step removes what theirs would have
            span = stage.span(k)
            base_rate = p.base_rate if span == 1 else 1.0 - (1.0 - p.base_rate - p.ap_rate) ** span - p.ap_rate
            # theta_0 of cycle k (every parameter and buffer, so BN running stats are reset: ap_reset_bn_stats): a
            # fresh draw of the initialiser from the (seed, cycle) stream (reinit), or the original init (lt)
            theta0 = stage.fresh_state(f"cycles/init{k}") if p.mode == "reinit" else stage.original()
            stage.load(theta0)
            reference = stage.weights() if p.movement_reference == "cycle_init" else stage.weights(stage.original())
            if p.decision == "dpf":
                base = self._dpf_decision(spec, stage, k, steps, base_rate)
                alive = base.pop("alive_all")
                stats = stage.decide(CyclePrune(spec.score, spec.allocation, base_rate, p.ap_rate, reference,
                                                base_done=base, alive_before=alive))
            else:
                stage.train(f"cycles/cycle{k}/train", t.retrain)  # the mask of the previous cycle held
                stats = stage.decide(CyclePrune(spec.score, spec.allocation, base_rate, p.ap_rate, reference,
                                                stream=f"cycles/score{k}"))
            if stats["ap_guarded"]:
                log.warning("AP step of cycle %d: only %d candidates for n_ap = %d, all removed (ap_guard_ap_step)",
                            k, stats["ap_candidates"], stats["n_ap"])
            stage.load(theta0)  # reset to this cycle's init, times the new mask
            res = stage.train(f"cycles/cycle{k}/retrain", t.retrain, epoch_metrics=True)  # the recorded retraining
            last = {key: v for key, v in res.epochs[-1].items() if key not in ("epoch", "steps")}
            stage.row("round", k, measures=("densities", "masked_nonzero"), steps=res.steps, **last, **stats,
                      epochs=res.epochs)
        stage.finish(graph_layers=True, dnr=False)  # the graph of conv and linear weights: BN gamma is no layer

    @staticmethod
    def _dpf_decision(spec: RunSpec, stage: Stage, k: int, steps: int, base_rate: float) -> dict:
        """DPF as the base method of a cycle (assumption ``ap_dpf_base_assumed``): the cycle's decision training with
        DPF's feedback (straight-through, re-selection from the dense weights over *every entry of DPF's own prunable
        set*, the conv weights: dpf.md 1.5, ap.md 1.1) from that set's current density to this cycle's target, then
        one last selection at exactly the target. The rest of the maskable set (BN gamma, the linear weight) is
        outside every selection: it keeps its mask, its masked weights re-zeroed after every optimizer step.

        The count is exact: of the ``U`` alive entries of DPF's set, ``U - round(base_rate * U)`` survive (the nested
        base step's rule, applied to DPF's own set), so the base step removes ``round(base_rate * U)`` entries net of
        regrowth, all of them in DPF's set. Returns the base step's counts (``base_pruned`` net of regrowth) and the
        alive count of the whole maskable set before it (``alive_all``)."""
        p = spec.params
        alive_all = stage.alive()
        n, alive = stage.size(only="conv"), stage.alive(only="conv")
        keep = alive - round(base_rate * alive)
        end = min(stage.steps(p.dpf_end), steps) if p.dpf_end else steps
        schedule = Cubic(final_sparsity=1.0 - keep / n, start=0, end=end, every=p.dpf_update_every,
                         initial_sparsity=1.0 - alive / n, freeze_after_end=True)
        trained = stage.train(f"cycles/cycle{k}/train", spec.training.retrain,
                              update=Reselect(schedule, spec.score, spec.allocation, feedback=True, only="conv"))
        final = stage.decide(Reselection(spec.score, spec.allocation, density=keep / n, only="conv"))
        left = stage.alive(only="conv")
        if left != keep:
            raise RuntimeError(f"DPF base step kept {left} entries, expected exactly {keep}")
        return {"base_pruned": alive - left, "dpf_alive_before": alive,
                "dpf_mask_updates": trained.update["mask_updates"] + 1,
                "dpf_regrown": trained.update["reactivated_total"] + final["regrown"], "alive_all": alive_all}
