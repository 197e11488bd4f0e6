"""Pruning cycles with an optional AP ("Activate-while-Pruning") step (ap.md 2.2).

One procedure, ``cycles``, runs the released code's cycle structure for *any* base method: the
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
(``epochs``: a list, kept in rows.jsonl and ``ap_epochs.csv``; MLflow gets it as ``retrain/<metric>``). A
checkpoint after every cycle makes an interrupted run resume at its next cycle.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from harness import metrics as model_metrics
from harness.config.expand import DenseSpec, RunSpec
from harness.models import build_model
from harness.paths import atomic_save, atomic_write_text, read_jsonl
from harness.pruning import scores
from harness.pruning.masks import MaskHook, MaskSet, prunable_parameters
from harness.pruning.methods.base import Procedure, final_row, row
from harness.train import HookChain, StepHooks, make_optimizer, make_scheduler, stage_seed, train
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


# ----------------------------------------------------------------------------- the pruning step


@torch.no_grad()
def ap_step(masks: MaskSet, reference: dict[str, torch.Tensor], n_ap: int) -> tuple[dict, dict[str, torch.Tensor]]:
    """AP's activation step (ap.md 2.1) on the current weights theta_T of ``masks``: among the unmasked entries with
    theta_T < 0, mask the ``n_ap`` with the smallest ``|theta_T - reference|``; ties go to the lower flat index in
    forward order. With fewer candidates than ``n_ap`` all of them are removed (``ap_guarded``). Returns the counts
    and the entries it removed (name -> bool tensor).

    Reference (Martin1937/Activate-While-Pruning resnet_20.py:337-392): candidates are the alive entries that are
    negative after the base step (:364), the movement is measured against the state taken at the start of this
    cycle's first training (:172, :351-352), and the code masks every candidate whose movement is ``<=`` the value at
    0-based index ``n_ap`` of the sorted movements (:369, :385): ``n_ap + 1`` entries plus ties, IndexError when
    there are ``<= n_ap`` candidates. Exactly ``n_ap`` and the guard are deviations ``ap_exact_n_ap`` and
    ``ap_guard_ap_step``."""
    names = list(masks.params)
    theta = torch.cat([masks.params[n].detach().reshape(-1) for n in names])
    alive = torch.cat([masks.masks[n].reshape(-1) for n in names])
    ref = torch.cat([reference[n].detach().reshape(-1).to(theta) for n in names])
    cand = alive & (theta < 0)
    n_cand = int(cand.sum())
    k = min(n_ap, n_cand)
    inf = torch.full_like(theta, math.inf, dtype=torch.float64)
    delta = torch.where(cand, (theta - ref).abs().to(torch.float64), inf)
    removed = torch.zeros_like(alive)
    removed[torch.argsort(delta, stable=True)[:k]] = True
    new, gone, start = {}, {}, 0
    for n in names:
        size = masks.masks[n].numel()
        r = removed[start:start + size].reshape(masks.masks[n].shape)
        new[n], gone[n] = masks.masks[n] & ~r, r
        start += size
    masks.set_masks_(new)
    masks.apply_()
    stats = {"ap_candidates": n_cand, "ap_removed": k, "ap_guarded": float(n_cand < n_ap)}
    return stats, gone


def prune_cycle(masks: MaskSet, score: str, allocation: str, base_rate: float, ap_rate: float,
                reference: dict[str, torch.Tensor], base_done: dict | None = None,
                alive_before: int | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """One cycle's pruning for any base method: ``n_ap`` counted first, the base step through the shared
    score -> allocation -> mask pipeline, then (``ap_rate > 0``) :func:`ap_step`. ``base_done``: the base step
    already happened during the decision training (DPF, its counts; ``alive_before`` the count before it). Returns
    the counts and the entries the AP step removed."""
    # resnet_20.py:302-313, 332: n_ap = int(size of the alive pool * rate), the pool collected before the base step
    alive = alive_before if base_done is not None else sum(a for a, _ in masks.counts().values())
    n_ap = int(ap_rate * alive)
    base = base_done if base_done is not None else {"base_pruned": masks.prune_(score, allocation, base_rate)["pruned"]}
    stats = {"alive_before": alive, "n_ap": n_ap, **base}
    gone: dict[str, torch.Tensor] = {}
    if ap_rate > 0:
        ap, gone = ap_step(masks, reference, n_ap)
        stats.update(ap)
    else:
        stats.update(ap_candidates=0, ap_removed=0, ap_guarded=0.0)
    stats["pruned_fraction"] = (stats["base_pruned"] + stats["ap_removed"]) / max(alive, 1)
    return stats, gone


def dpf_decision_training(masks: MaskSet, dpf_names: list[str], score: str, allocation: str, base_rate: float,
                          update_every: int, end: int, train_fn) -> dict:
    """DPF as the base method of a cycle (assumption ``ap_dpf_base_assumed``): the cycle's decision training with
    DPF's feedback (:class:`CubicMaskHook`, straight-through, re-selection from the dense weights over *every entry of
    DPF's own prunable set* ``dpf_names``, the conv weights: dpf.md 1.5, ap.md 1.1) from that set's current density
    to this cycle's target, then one last selection at exactly the target, applied to the weights. The rest of the
    maskable set (BN gamma, the linear weight) is outside every selection: it keeps its mask, its masked weights
    re-zeroed after every optimizer step as in the masked training.

    The count is exact: of the ``U`` alive entries of DPF's set, ``U - round(base_rate * U)`` survive (the nested
    base step's rule, applied to DPF's own set), so the base step removes ``round(base_rate * U)`` entries net of
    regrowth, all of them in DPF's set. ``train_fn(hook)`` runs the training. Returns the base step's counts
    (``base_pruned`` net of regrowth)."""
    from harness.pruning.methods.gradual import CubicMaskHook

    dpf = MaskSet({n: masks.params[n] for n in dpf_names}, {n: masks.masks[n] for n in dpf_names})
    others = [n for n in masks.params if n not in dpf.params]
    rest = MaskSet({n: masks.params[n] for n in others}, {n: masks.masks[n] for n in others})
    n = sum(t for _, t in dpf.counts().values())
    alive = sum(a for a, _ in dpf.counts().values())
    keep = alive - round(base_rate * alive)
    target = keep / n  # select_ keeps round(target * n) = keep entries
    hook = CubicMaskHook(dpf, score, allocation, 1.0 - target, 0, end, update_every,
                         initial_sparsity=1.0 - alive / n, feedback=True, freeze_after_end=True)
    train_fn(HookChain(hook, MaskHook(rest)) if rest.params else hook)
    final = dpf.select_(scores.compute(score, dpf.score_inputs(), dense=True), allocation, density=target,
                        eligible="all")
    hook.reactivation.add(final["regrown"])
    dpf.apply_()
    if rest.params:
        rest.apply_()
    masks.set_masks_({**rest.masks, **dpf.masks})
    left = sum(a for a, _ in dpf.counts().values())
    if left != keep:
        raise RuntimeError(f"DPF base step kept {left} entries, expected exactly {keep}")
    return {"base_pruned": alive - left, "dpf_alive_before": alive, "dpf_mask_updates": hook.updates + 1,
            "dpf_regrown": hook.reactivation.metrics().get("reactivated_total", 0)}


def densities(model: nn.Module, masks: MaskSet) -> dict:
    """Mask densities over the maskable set, over every conv + linear weight and over all parameters (ap.md 7,
    item 9: from the mask, so a weight that is 0 but unmasked counts as present); entries outside the mask count as
    present."""
    def alive(name: str, p: torch.Tensor) -> int:
        return int(masks.masks[name].sum()) if name in masks.masks else p.numel()

    cl = prunable_parameters(model, "conv_and_linear_weights")
    named = dict(model.named_parameters())
    return {"density_maskable": masks.density(),
            "density_conv_linear": sum(alive(n, p) for n, p in cl.items()) / sum(p.numel() for p in cl.values()),
            "density_all_params": sum(alive(n, p) for n, p in named.items()) / sum(p.numel() for p in named.values())}


def layer_masks(masks: MaskSet) -> MaskSet:
    """The masks of the weights with >= 2 dims (conv, linear): the mask-graph metrics' layers (BN gamma is no layer
    of the graph)."""
    names = [n for n, p in masks.params.items() if p.dim() >= 2]
    return MaskSet({n: masks.params[n] for n in names}, {n: masks.masks[n] for n in names})


def masked_nonzero(masks: MaskSet) -> int:
    """Masked entries whose weight is not exactly 0 (0 when the mask is enforced)."""
    return sum(int(((~m) & (masks.params[n].detach() != 0)).sum()) for n, m in masks.masks.items())


# ----------------------------------------------------------------------------- the procedure


class Cycles(Procedure):
    name = "cycles"
    Params = CyclesParams
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
        t = spec.training
        return DenseSpec(model=spec.model, num_classes=spec.num_classes, dataset=spec.dataset,
                         optimizer=t.optimizer, lr_schedule=t.lr_schedule, batch_size=t.batch_size,
                         drop_last=t.drop_last, steps=t.pretrain, precision=t.precision, seed=spec.seed,
                         channels_last=t.channels_last, compile=t.compile)

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

    def cycle_init(self, spec: RunSpec, k: int, original: dict, device: torch.device) -> dict:
        """theta_0 of cycle ``k`` (every parameter and buffer): a fresh draw of the model's initialiser from the
        (seed, cycle) stream (``reinit``), or a copy of the original initialisation (``lt``)."""
        if spec.params.mode == "lt":
            return {n: v.clone() for n, v in original.items()}
        torch.manual_seed(stage_seed(spec.seed, f"cycles/init{k}"))
        fresh = build_model(spec.model.arch, spec.num_classes, spec.model.width, spec.model.init)
        return {n: v.to(device) for n, v in fresh.state_dict().items()}

    def run(self, spec: RunSpec, ctx, d: Path) -> list[dict]:
        from harness.experiment import (dead_neuron_metrics, evaluate_model, get_data, graph_metrics, measure,
                                        run_dense, save_rows)

        device = ctx.torch_device
        p, t = spec.params, spec.training
        dense_spec = self.dense_spec(spec)
        dense_row = run_dense(dense_spec, ctx, spec.eval)
        dense_dir = ctx.paths.dense_dir(dense_spec.id)
        data = get_data(spec.dataset, ctx)
        model = build_model(spec.model.arch, spec.num_classes, spec.model.width, spec.model.init).to(device)
        masks = MaskSet.for_model(model, spec.prunable)
        dense_macs = model_metrics.macs(model)[0]
        original = torch.load(dense_dir / "init.pt", map_location=device)
        rows_path, ckpt_path = d / "rows.jsonl", d / "checkpoint.pt"
        start = 1
        if ckpt_path.exists():
            ck = torch.load(ckpt_path, map_location=device)
            model.load_state_dict(ck["model"])
            masks.set_masks_(ck["masks"])
            start = ck["round"] + 1
            rows = read_jsonl(rows_path)[:start]  # rows 0..round; anything later was not checkpointed
        else:
            model.load_state_dict(torch.load(dense_dir / "final.pt", map_location=device))
            rows = [{**dense_row, **measure(model, masks, dense_macs), **densities(model, masks),
                     **dead_neuron_metrics(model, data, spec.eval, per_layer=True)}]
            save_rows(rows_path, rows)
        for r in rows:
            ctx.report(r)

        spe = steps_per_epoch(data.n_train, t.batch_size, t.drop_last)
        steps = duration_steps(t.retrain, spe)

        def training(seed_name: str, hooks: StepHooks):
            opt = make_optimizer(t.optimizer, model.parameters())  # fresh optimizer and LR schedule every training
            return train(model, data, steps=steps, optimizer=opt, scheduler=make_scheduler(opt, t.lr_schedule, spe),
                         batch_size=t.batch_size, drop_last=t.drop_last, seed=stage_seed(spec.seed, seed_name),
                         hooks=hooks, precision=t.precision)

        for k in range(start, p.cycles + 1):
            theta0 = self.cycle_init(spec, k, original, device)
            model.load_state_dict(theta0)  # parameters and BN running stats (ap_reset_bn_stats)
            masks.apply_()
            if p.movement_reference == "cycle_init":
                reference = {n: w.detach().clone() for n, w in masks.params.items()}
            else:
                reference = {n: original[n] for n in masks.params}
            if p.decision == "dpf":
                alive = sum(a for a, _ in masks.counts().values())
                end = min(duration_steps(p.dpf_end, spe), steps) if p.dpf_end else steps
                dpf_names = [n for n in prunable_parameters(model, "conv_weights") if n in masks.params]
                base = dpf_decision_training(masks, dpf_names, spec.score, spec.allocation, p.base_rate,
                                             p.dpf_update_every, end,
                                             lambda hook: training(f"cycles/cycle{k}/train", hook))
                stats, _ = prune_cycle(masks, spec.score, spec.allocation, p.base_rate, p.ap_rate, reference,
                                       base_done=base, alive_before=alive)
            else:
                training(f"cycles/cycle{k}/train", MaskHook(masks))
                stats, _ = prune_cycle(masks, spec.score, spec.allocation, p.base_rate, p.ap_rate, reference)
            if stats["ap_guarded"]:
                log.warning("AP step of cycle %d: only %d candidates for n_ap = %d, all removed (ap_guard_ap_step)",
                            k, stats["ap_candidates"], stats["n_ap"])
            model.load_state_dict(theta0)  # reset to this cycle's init, times the new mask
            masks.apply_()
            epochs: list[dict] = []
            meter = model_metrics.DeadNeuronMeter(model)  # the dynamic DNR over this training's batches (ap.md 1.1)

            class EpochEval(StepHooks):
                def after_epoch(self, epoch: int, st) -> None:
                    train_dnr, train_sites = meter.read()  # this epoch's training forward passes, then reset
                    dynamic = {"train_dnr": train_dnr, "train_dnr_layers": train_sites} if meter.sites else {}
                    epochs.append({"epoch": epoch, "steps": st.step,
                                   **evaluate_model(model, data, spec.eval, spec.seed, t.precision),
                                   **dead_neuron_metrics(model, data, spec.eval, per_layer=True), **dynamic})

            try:
                res = training(f"cycles/cycle{k}/retrain", HookChain(MaskHook(masks), EpochEval()))
            finally:
                meter.close()
            last = {key: v for key, v in epochs[-1].items() if key not in ("epoch", "steps")}
            rows.append(row("round", k, steps=res.steps, **measure(model, masks, dense_macs), **densities(model, masks),
                            **last, **stats, masked_nonzero=masked_nonzero(masks), epochs=epochs))
            save_rows(rows_path, rows)
            atomic_write_text(d / "ap_epochs.csv", epochs_csv(rows))
            atomic_save({"round": k, "model": model.state_dict(), "masks": masks.state_dict()}, ckpt_path)
            ctx.report(rows[-1])
            if k < p.cycles:
                ctx.checkpointed("round", k)
        atomic_save(masks.state_dict(), d / "masks_final.pt")
        last = {key: v for key, v in rows[-1].items() if key != "epochs"}
        rows.append(final_row(last, **graph_metrics(model, layer_masks(masks), spec.eval, d)))
        save_rows(rows_path, rows)
        ctx.report(rows[-1])
        return rows


EPOCH_COLUMNS = ("test_acc", "test_loss", "train_acc", "train_loss", "dead_neuron_rate", "train_dnr")


def epochs_csv(rows: list[dict]) -> str:
    """Every recorded retraining's per-epoch metrics: one line per (cycle, epoch); the harness-defined post-training
    dead-neuron rate on the test set overall and per ReLU site (``dead_neuron_rate``, ``dnr/<module>``), then the
    paper's dynamic DNR over that epoch's training batches (``train_dnr``, ``train_dnr/<module>``)."""
    lines = [(r["index"], e) for r in rows if r["axis"] == "round" for e in r.get("epochs", [])]
    sites = list(lines[0][1].get("dnr_layers", {})) if lines else []
    train_sites = list(lines[0][1].get("train_dnr_layers", {})) if lines else []
    nan = float("nan")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["cycle", "epoch", "steps", *EPOCH_COLUMNS, *(f"dnr/{s}" for s in sites),
                *(f"train_dnr/{s}" for s in train_sites)])
    for k, e in lines:
        w.writerow([k, e["epoch"], e["steps"], *(f"{e.get(c, nan):.6f}" for c in EPOCH_COLUMNS),
                    *(f"{e['dnr_layers'][s]:.6f}" for s in sites),
                    *(f"{e.get('train_dnr_layers', {}).get(s, nan):.6f}" for s in train_sites)])
    return buf.getvalue()
