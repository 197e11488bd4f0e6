"""One long training stage, shared by the single-stage procedures (gradual pruning, DPF, pruning
at initialisation): epoch rows, evaluations where the manifest asks, a checkpoint at the end of
every epoch, resume mid-run, the final row.

The checkpoint holds the model, optimizer, LR scheduler, masks, the procedure hook's state, the
loop's :class:`~harness.train.TrainState` (data-order generator, RNG) and the rows so far, so a
run killed in epoch ``e`` restarts at the end of epoch ``e - 1`` and ends bit-identical to an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import torch
from torch import nn

from harness import metrics as model_metrics
from harness.config.expand import RunSpec
from harness.paths import atomic_save, write_json
from harness.pruning import graph
from harness.pruning.masks import MaskSet
from harness.pruning.methods.base import Procedure, final_row, row
from harness.train import HookChain, StepHooks, TrainState, make_optimizer, make_scheduler, stage_seed, train
from harness.units import duration_steps, steps_per_epoch


class StageHook(StepHooks):
    """A procedure's hook inside a stage: its state is checkpointed, its metrics join each row."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def metrics(self) -> dict:
        return {}

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called once before training (e.g. Sparse Momentum reads the optimizer's momentum)."""

    def effective_weights(self):
        """A context in which the model holds the weights to evaluate (DPF: m * w)."""
        return contextlib.nullcontext()

    def finish(self) -> None:
        """After the last step: leave the model as the run's output."""


class Reactivation:
    """Entries a mask update brought back (DPF, DSR, Sparse Momentum): in total, and since the
    previous row (``metrics`` reports and resets that count); checkpointed with the hook."""

    def __init__(self) -> None:
        self.total = 0
        self.reported = 0  # the total at the previous row

    def add(self, regrown: int) -> None:
        self.total += regrown

    def metrics(self) -> dict:
        out = {"reactivated": self.total - self.reported, "reactivated_total": self.total}
        self.reported = self.total
        return out

    def state_dict(self) -> dict:
        return {"reactivated_total": self.total, "reactivated_reported": self.reported}

    def load_state_dict(self, state: dict) -> None:
        self.total, self.reported = state["reactivated_total"], state["reactivated_reported"]


class FixedMask(StageHook):
    """A mask chosen before training and held fixed: masked weights re-zeroed after every step.
    ``extra``: constant values of how the mask was chosen, reported with every row."""

    def __init__(self, masks: MaskSet, extra: dict | None = None):
        self.masks, self.extra = masks, dict(extra or {})

    def after_optimizer_step(self, step: int) -> None:
        self.masks.apply_()

    def metrics(self) -> dict:
        return dict(self.extra)


class SingleStage(Procedure):
    """A procedure whose run is one training stage of ``training.pretrain`` from the
    initialisation: rows on the ``epoch`` axis at the evaluated epochs, then the final row."""

    axis = "epoch"

    def planned_rows(self, spec: RunSpec) -> list[tuple[str, int]]:
        from harness.config import train_size

        t = spec.training
        spe = steps_per_epoch(train_size(spec.dataset), t.batch_size, t.drop_last)
        total = duration_steps(t.pretrain, spe)
        return ([("epoch", e) for e in sorted(eval_epochs(spec, spe, total))]
                + [("snapshot", k) for k in snapshot_steps(spec, spe, total)] + [("final", 0)])

    def images(self, spec: RunSpec, n_train: int) -> tuple[int, int]:
        t = spec.training
        return 0, duration_steps(t.pretrain, steps_per_epoch(n_train, t.batch_size, t.drop_last)) * t.batch_size


def eval_epochs(spec: RunSpec, spe: int, total_steps: int) -> set[int]:
    """Epoch numbers (from 1) after which the run is evaluated; the last one always is."""
    last = math.ceil(total_steps / spe)
    out = {last}
    out.update(max(1, math.ceil(duration_steps(d, spe) / spe)) for d in spec.eval.epochs)
    if spec.eval.every is not None:
        every = max(1, math.ceil(duration_steps(spec.eval.every, spe) / spe))
        out.update(range(every, last + 1, every))
    return {e for e in out if 1 <= e <= last}


def snapshot_steps(spec: RunSpec, spe: int, total_steps: int) -> list[int]:
    """Steps (counted from 1) after which the run takes a snapshot (``eval.snapshots``), in order."""
    if spec.eval.snapshots is None:
        return []
    every = max(1, duration_steps(spec.eval.snapshots, spe))
    return list(range(every, total_steps + 1, every))


def run_stage(spec: RunSpec, ctx, d: Path, model: nn.Module, masks: MaskSet, hook: StageHook,
              stage: str = "train") -> list[dict]:
    """Train ``model`` for ``training.pretrain`` with ``hook``; resumable; returns every row."""
    from harness.experiment import dead_neuron_metrics, evaluate_model, get_data, graph_metrics, measure, save_rows

    t = spec.training
    device = ctx.torch_device
    data = get_data(spec.dataset, ctx)
    spe = steps_per_epoch(data.n_train, t.batch_size, t.drop_last)
    steps = duration_steps(t.pretrain, spe)
    wanted = eval_epochs(spec, spe, steps)
    dense_macs = model_metrics.macs(model)[0]
    opt = make_optimizer(t.optimizer, model.parameters())
    sched = make_scheduler(opt, t.lr_schedule, spe)
    rows_path, ckpt_path = d / "rows.jsonl", d / "checkpoint.pt"
    state = None
    rows: list[dict] = []
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if sched is not None:
            sched.load_state_dict(ck["scheduler"])
        masks.set_masks_(ck["masks"])
        hook.load_state_dict(ck["hook"])
        state = TrainState.from_dict(ck["train_state"])
        rows = ck["rows"]
        for r in rows:
            ctx.report(r)

    def evaluate_row(epoch: int, step: int) -> dict:
        with hook.effective_weights():
            r = row("epoch", epoch, steps=step, **hook.metrics(), **measure(model, masks, dense_macs),
                    **evaluate_model(model, data, spec.eval, spec.seed, t.precision))
        rows.append(r)
        save_rows(rows_path, rows)
        ctx.report(r)
        return r

    snap_at = set(snapshot_steps(spec, spe, steps))
    done_snaps = {r["index"] for r in rows if r["axis"] == "snapshot"}
    init_coords = initial_coordinates(spec, d, masks, hook)

    class Snapshot(StepHooks):
        """``eval.snapshots``: the mask-graph metrics of the current mask (with the weights the model evaluates) and
        the model's accuracy, as a ``snapshot`` row at that step (the PAGS paper's sampled subnetworks)."""

        def after_optimizer_step(self, step: int) -> None:
            if step + 1 not in snap_at or step + 1 in done_snaps:
                return
            with hook.effective_weights():
                table = graph.layer_table({n: p.detach() for n, p in masks.params.items()}, masks.masks, spec.eval.graph,
                                          init_coordinates=init_coords)
                r = row("snapshot", step + 1, density=masks.density(), **graph.summary(table, spec.eval.graph),
                        **evaluate_model(model, data, spec.eval, spec.seed, t.precision))
            model.train()
            rows.append(r)
            done_snaps.add(step + 1)
            save_rows(rows_path, rows)
            ctx.report(r)

    class EpochEnd(StepHooks):
        def after_epoch(self, epoch: int, st: TrainState) -> None:
            if epoch in wanted:
                evaluate_row(epoch, st.step)
            atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict() if sched is not None else None,
                         "masks": masks.state_dict(), "hook": hook.state_dict(),
                         "train_state": st.to_dict(), "rows": list(rows)}, ckpt_path)
            ctx.checkpointed("epoch", epoch)

    hook.attach(model, opt)
    train(model, data, steps=steps, optimizer=opt, scheduler=sched, batch_size=t.batch_size, drop_last=t.drop_last,
          seed=stage_seed(spec.seed, stage), hooks=HookChain(hook, Snapshot() if snap_at else None, EpochEnd()),
          precision=t.precision, state=state)
    hook.finish()
    last_epoch = math.ceil(steps / spe)
    epoch_rows = [r for r in rows if r["axis"] == "epoch"]
    if not epoch_rows or epoch_rows[-1]["index"] != last_epoch:  # the budget ended mid-epoch
        evaluate_row(last_epoch, steps)
        epoch_rows = [r for r in rows if r["axis"] == "epoch"]
    atomic_save(masks.state_dict(), d / "masks_final.pt")
    rows.append(final_row(epoch_rows[-1], **best_of(rows), **graph_metrics(model, masks, spec.eval, d, init_coords),
                          **dead_neuron_metrics(model, data, spec.eval)))
    save_rows(rows_path, rows)
    ctx.report(rows[-1])
    return rows


def initial_coordinates(spec: RunSpec, d: Path, masks: MaskSet, hook: StageHook) -> dict | None:
    """``eval.graph.reference: init``: the full-spectrum coordinates of the run's initial sparse network (its mask and
    weights before the first step), the origin its snapshots' and final distances are measured from; computed once
    and kept in the run folder (``graph_reference.json``), so a resumed run measures from the same point."""
    if spec.eval.graph.reference != "init":
        return None
    path = d / "graph_reference.json"
    if path.exists():
        return {n: tuple(v) for n, v in json.loads(path.read_text()).items()}
    with hook.effective_weights():
        coords = graph.reference_coordinates({n: p.detach() for n, p in masks.params.items()}, spec.eval.graph,
                                             masks=masks.masks)
    write_json(path, {n: list(v) for n, v in coords.items()})
    return coords


def best_of(rows: list[dict]) -> dict:
    """Selections over the evaluated epochs: the best test accuracy (what DPF's third-party code
    reports) and, with a validation split, the test accuracy at the best-validation epoch (the
    first on ties, as the PAGS predecessor's pandas idxmax)."""
    epochs = [r for r in rows if r["axis"] == "epoch"]
    best = max(epochs, key=lambda r: r["test_acc"])  # max() keeps the first of equal values
    out = {"best_test_acc": best["test_acc"], "best_epoch": best["index"]}
    if "val_acc" in epochs[0]:
        by_val = max(epochs, key=lambda r: r["val_acc"])
        out.update(test_acc_at_best_val=by_val["test_acc"], best_val_acc=by_val["val_acc"], best_val_epoch=by_val["index"])
    return out
