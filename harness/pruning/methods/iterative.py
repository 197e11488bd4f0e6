"""Iterative pruning: dense pre-training, then rounds of prune -> retrain (LAMP, IMP/LTH).

Each round removes ``amount_per_round`` of the still-unmasked weights (nested masks, density
``(1 - amount)^k``), optionally rewinds every parameter and buffer to a step of the dense
pre-training (``rewind_step``: 0 = the initialisation), and retrains for ``training.retrain``
with masked weights re-zeroed after every optimizer step. A checkpoint after every round makes
an interrupted run resume at its next round; rows are on the ``round`` axis (0 = dense).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from harness import metrics as model_metrics
from harness.config.expand import DenseSpec, RunSpec
from harness.config.schema import LRScheduleConfig, OptimizerConfig
from harness.models import build_model
from harness.paths import atomic_save, read_jsonl
from harness.pruning.masks import MaskHook, MaskSet
from harness.pruning.methods.base import Procedure, final_row, row
from harness.train import make_optimizer, make_scheduler, stage_seed, train
from harness.units import duration_steps, is_duration, steps_per_epoch


@dataclass(frozen=True)
class IterativeParams:
    amount_per_round: float  # fraction of the remaining weights removed per round
    rounds: int
    rewind_step: int | None = None  # None: fine-tune the pruned weights; k: rewind to step k
    fresh_optimizer_each_round: bool = True


class Iterative(Procedure):
    name = "iterative"
    Params = IterativeParams
    axis = "round"
    description = "dense pre-training, then rounds of prune -> retrain (optionally rewinding)"

    def check(self, p: IterativeParams, err) -> None:
        if not 0 < p.amount_per_round < 1:
            err("amount_per_round", f"expected a fraction in (0, 1), got {p.amount_per_round}")
        if p.rounds < 1:
            err("rounds", f"expected a positive integer, got {p.rounds}")
        if p.rewind_step is not None and p.rewind_step < 0:
            err("rewind_step", f"expected a step >= 0 or null, got {p.rewind_step}")

    def dense_spec(self, spec: RunSpec) -> DenseSpec:
        t, rewind = spec.training, spec.params.rewind_step
        return DenseSpec(model=spec.model, num_classes=spec.num_classes, dataset=spec.dataset,
                         optimizer=t.optimizer, lr_schedule=t.lr_schedule, batch_size=t.batch_size,
                         drop_last=t.drop_last, steps=t.pretrain, precision=t.precision, seed=spec.seed,
                         snapshot_step=rewind if rewind else None, channels_last=t.channels_last, compile=t.compile)

    def schedule(self, spec: RunSpec) -> IterativeParams:
        """The rounds this run prunes (its parameters, here)."""
        return spec.params

    def retraining(self, spec: RunSpec) -> tuple[str, OptimizerConfig, LRScheduleConfig]:
        """(duration, optimizer, LR schedule) of each round's retraining."""
        t = spec.training
        return t.retrain, t.optimizer, t.lr_schedule

    def planned_rows(self, spec: RunSpec) -> list[tuple[str, int]]:
        return [("round", k) for k in range(self.schedule(spec).rounds + 1)] + [("final", 0)]

    def images(self, spec: RunSpec, n_train: int) -> tuple[int, int]:
        t = spec.training
        spe = steps_per_epoch(n_train, t.batch_size, t.drop_last)
        return (duration_steps(t.pretrain, spe) * t.batch_size,
                duration_steps(self.retraining(spec)[0], spe) * t.batch_size * self.schedule(spec).rounds)

    def summary(self, spec: RunSpec) -> str:
        p = self.schedule(spec)
        rewind = "" if p.rewind_step is None else f", rewind to step {p.rewind_step}"
        return (f"{p.rounds} rounds of {100 * p.amount_per_round:g}% -> "
                f"{100 * (1 - p.amount_per_round) ** p.rounds:.3g}% remaining{rewind}")

    def run(self, spec: RunSpec, ctx, d: Path) -> list[dict]:
        from harness.experiment import (dead_neuron_metrics, evaluate_model, get_data, graph_metrics, measure,
                                        run_dense, save_rows)

        device = ctx.torch_device
        p, t = self.schedule(spec), spec.training
        dense_spec = self.dense_spec(spec)
        dense_row = run_dense(dense_spec, ctx, spec.eval)
        dense_dir = ctx.paths.dense_dir(dense_spec.id)
        data = get_data(spec.dataset, ctx)
        model = build_model(spec.model.arch, spec.num_classes, spec.model.width, spec.model.init).to(device)
        model.load_state_dict(torch.load(dense_dir / "final.pt", map_location=device))
        masks = MaskSet.for_model(model, spec.prunable)
        dense_macs = model_metrics.macs(model)[0]
        rows_path, ckpt_path = d / "rows.jsonl", d / "checkpoint.pt"
        keep_optimizer = not p.fresh_optimizer_each_round
        opt = None
        start = 1
        if ckpt_path.exists():
            ck = torch.load(ckpt_path, map_location=device)
            model.load_state_dict(ck["model"])
            masks.set_masks_(ck["masks"])
            if keep_optimizer:
                opt = make_optimizer(self.retraining(spec)[1], model.parameters())
                opt.load_state_dict(ck["optimizer"])
            start = ck["round"] + 1
            rows = read_jsonl(rows_path)[:start]  # rows 0..round; anything later was not checkpointed
        else:
            rows = [{**dense_row, **measure(model, masks, dense_macs)}]
            save_rows(rows_path, rows)
        for r in rows:
            ctx.report(r)

        rewind_state = None
        if p.rewind_step is not None:
            name = "init.pt" if p.rewind_step == 0 else "snapshot.pt"
            rewind_state = torch.load(dense_dir / name, map_location=device)
        spe = steps_per_epoch(data.n_train, t.batch_size, t.drop_last)
        retrain, optimizer, lr_schedule = self.retraining(spec)
        retrain_steps = duration_steps(retrain, spe)
        for k in range(start, p.rounds + 1):
            masks.prune_(spec.score, spec.allocation, p.amount_per_round)
            if rewind_state is not None:
                model.load_state_dict(rewind_state)  # every parameter and buffer back to the rewind point
                masks.apply_()
            if opt is None or not keep_optimizer:
                opt = make_optimizer(optimizer, model.parameters())
            sched = make_scheduler(opt, lr_schedule, spe)
            res = train(model, data, steps=retrain_steps, optimizer=opt, scheduler=sched, batch_size=t.batch_size,
                        drop_last=t.drop_last, seed=stage_seed(spec.seed, f"round{k}"), hooks=MaskHook(masks),
                        precision=t.precision)
            rows.append(row("round", k, steps=res.steps, **measure(model, masks, dense_macs),
                            **evaluate_model(model, data, spec.eval, spec.seed, t.precision)))
            save_rows(rows_path, rows)
            ckpt = {"round": k, "model": model.state_dict(), "masks": masks.state_dict()}
            if keep_optimizer:  # carried across rounds, so a resumed run must get it back
                ckpt["optimizer"] = opt.state_dict()
            atomic_save(ckpt, ckpt_path)
            ctx.report(rows[-1])
            if k < p.rounds:
                ctx.checkpointed("round", k)
        atomic_save(masks.state_dict(), d / "masks_final.pt")
        rows.append(final_row(rows[-1], **graph_metrics(model, masks, spec.eval, d),
                              **dead_neuron_metrics(model, data, spec.eval)))
        save_rows(rows_path, rows)
        ctx.report(rows[-1])
        return rows


@dataclass(frozen=True)
class OneShotParams:
    finetune: str  # duration of the fine-tuning after the one pruning step
    finetune_lr: float | None = None  # constant LR for it; None: training.optimizer and lr_schedule
    rewind_step: int | None = None
    fresh_optimizer_each_round: bool = True


class OneShot(Iterative):
    """One-shot prune + fine-tune (Han et al. 2015 style, DPF's "One-shot P+FT" baseline): the
    shared dense model (``training.pretrain``) is pruned once to the target sparsity, then
    fine-tuned for ``finetune`` with the mask fixed, at the constant ``finetune_lr`` if given.
    Rows: round 0 (dense), round 1, final."""

    name = "one_shot"
    Params = OneShotParams
    needs_sparsity = True
    description = "dense training, one pruning step to the target sparsity, fine-tuning with the mask fixed"

    def check(self, p: OneShotParams, err) -> None:
        if p.rewind_step is not None and p.rewind_step < 0:
            err("rewind_step", f"expected a step >= 0 or null, got {p.rewind_step}")
        if not is_duration(p.finetune):
            err("finetune", f"expected a duration like '30ep', got {p.finetune!r}")
        if p.finetune_lr is not None and p.finetune_lr <= 0:
            err("finetune_lr", f"expected a positive learning rate, got {p.finetune_lr}")

    def summary(self, spec: RunSpec) -> str:
        p = spec.params
        lr = f" at lr {p.finetune_lr:g}" if p.finetune_lr is not None else ""
        return f"dense model, one {spec.score} pruning step to the target, fine-tuning {p.finetune}{lr}"

    def retraining(self, spec: RunSpec) -> tuple[str, OptimizerConfig, LRScheduleConfig]:
        p, t = spec.params, spec.training
        if p.finetune_lr is None:
            return p.finetune, t.optimizer, t.lr_schedule
        return p.finetune, dataclasses.replace(t.optimizer, lr=p.finetune_lr), LRScheduleConfig("constant")

    def schedule(self, spec: RunSpec) -> IterativeParams:
        p = spec.params
        return IterativeParams(amount_per_round=spec.target_sparsity or 0.0, rounds=1, rewind_step=p.rewind_step,
                               fresh_optimizer_each_round=p.fresh_optimizer_each_round)
