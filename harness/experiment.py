"""One RunSpec end to end: data -> model -> pruning procedure drives training -> metrics.

Every stage is idempotent (OpenLTH style): a finished dense model or run is marked ``DONE`` and
skipped; an interrupted run resumes from its last finished round. Each stage draws its
randomness from ``stage_seed(seed, stage)``, so a resumed run equals an uninterrupted one.

Nothing here knows about Ray or MLflow: progress leaves through ``Context.report`` (one dict
per evaluation), which the scheduler or the local executor routes to tracking.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from harness import metrics as model_metrics
from harness.data import DeviceData
from harness.manifest import (DatasetConfig, DenseSpec, EvalConfig, RunSpec, canonical_json,
                              duration_steps, steps_per_epoch)
from harness.models import build_model
from harness.paths import Paths, atomic_save, atomic_write_text, read_jsonl, write_json
from harness.pruning.allocation import target_amount
from harness.pruning.masks import MaskSet, overall_density
from harness.pruning.methods import PROCEDURES
from harness.pruning.schedules import cubic_sparsity
from harness.train import StepHooks, evaluate, make_optimizer, make_scheduler, stage_seed, train


class Interrupted(RuntimeError):
    """Raised by the ``stop_after_round`` test hook to simulate a crash."""


@dataclass
class Context:
    paths: Paths
    data_root: Path | None = None
    download: bool = False
    device: str | None = None
    report: Callable[[dict], None] = field(default=lambda row: None)
    stop_after_round: int | None = None  # tests: simulate an interruption after this round

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))


# ----------------------------------------------------------------------------- data

_DATA: dict[str, DeviceData] = {}


def get_data(ds: DatasetConfig, ctx: Context) -> DeviceData:
    """The dataset on the device, loaded once per process (Ray reuses trial actors)."""
    key = f"{canonical_json(ds)}|{ctx.torch_device}|{ctx.data_root}"
    if key not in _DATA:
        _DATA.clear()  # keep one dataset resident
        _DATA[key] = DeviceData.load(
            ds.source, Path(ctx.data_root or ctx.paths.data), ctx.download, ds.mean, ds.std,
            ds.crop_padding, ds.pad_mode, ds.hflip, ds.train_subset, ds.test_subset, ctx.torch_device)
    return _DATA[key]


def evaluate_model(model: nn.Module, data: DeviceData, ev: EvalConfig, seed: int, precision: str) -> dict:
    gen = torch.Generator(device=data.device).manual_seed(stage_seed(seed, "eval"))
    split = "train_augmented" if ev.train_augmented else "train"
    train_acc, train_loss = evaluate(
        model, data.eval_batches(split, ev.batch_size, ev.train_examples, generator=gen), precision)
    test_acc, test_loss = evaluate(model, data.eval_batches("test", ev.batch_size, ev.test_examples), precision)
    return {"test_acc": test_acc, "test_loss": test_loss, "train_acc": train_acc, "train_loss": train_loss}


# ----------------------------------------------------------------------------- dense


class _SnapshotHook(StepHooks):
    def __init__(self, model: nn.Module, step: int | None, path: Path):
        self.model, self.step, self.path = model, step, path

    def after_optimizer_step(self, step: int) -> None:
        if self.step is not None and step + 1 == self.step:
            atomic_save(self.model.state_dict(), self.path)


def run_dense(spec: DenseSpec, ctx: Context) -> dict:
    """Train (or load from the content-addressed cache) the dense model of ``spec``."""
    d = ctx.paths.dense_dir(spec.id)
    if (d / "DONE").exists():
        return json.loads((d / "metrics.json").read_text())
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "spec.json", canonical_json(spec) + "\n")
    device = ctx.torch_device
    data = get_data(spec.dataset, ctx)
    torch.manual_seed(stage_seed(spec.seed, "init"))
    model = build_model(spec.model.arch, spec.num_classes, spec.model.width).to(device)
    atomic_save(model.state_dict(), d / "init.pt")
    spe = steps_per_epoch(data.n_train, spec.batch_size, spec.drop_last)
    steps = duration_steps(spec.steps, spe)
    opt = make_optimizer(spec.optimizer, model.parameters())
    sched = make_scheduler(opt, spec.lr_schedule, spe)
    res = train(model, data, steps=steps, optimizer=opt, scheduler=sched, batch_size=spec.batch_size,
                drop_last=spec.drop_last, seed=stage_seed(spec.seed, "pretrain"),
                hooks=_SnapshotHook(model, spec.snapshot_step, d / "snapshot.pt"), precision=spec.precision)
    row = {"round": 0, "steps": res.steps, "density": 1.0, "density_all": overall_density(model),
           **evaluate_model(model, data, spec.eval, spec.seed, spec.precision)}
    atomic_save(model.state_dict(), d / "final.pt")
    write_json(d / "metrics.json", row)
    (d / "DONE").touch()
    ctx.report(row)
    return row


# ----------------------------------------------------------------------------- pruning runs


class _MaskHook(StepHooks):
    """Iterative pruning: masked weights are re-zeroed after every optimizer step."""

    def __init__(self, masks: MaskSet):
        self.masks = masks

    def after_optimizer_step(self, step: int) -> None:
        self.masks.apply_()


class GradualHook(StepHooks):
    """Zhu & Gupta (2017) gradual magnitude pruning: every ``every`` steps in [start, end] the
    mask is recomputed to the cubic target over the still-unmasked weights (no regrowth)."""

    def __init__(self, masks: MaskSet, score: str, allocation: str, final_sparsity: float,
                 start: int, end: int, every: int, initial_sparsity: float = 0.0):
        self.masks, self.score, self.allocation = masks, score, allocation
        self.final, self.start, self.end, self.every, self.initial = final_sparsity, start, end, every, initial_sparsity
        self.updates = 0

    def target_density(self, t: int) -> float:
        return 1.0 - cubic_sparsity(t, self.final, self.start, self.end, self.initial)

    def after_optimizer_step(self, step: int) -> None:
        t = step + 1
        if t % self.every == 0 and self.start <= t <= self.end:
            amount = target_amount(self.masks.layers(), self.target_density(t))
            if amount > 0:
                self.masks.prune_(self.score, self.allocation, amount)
                self.updates += 1
        self.masks.apply_()


def _layer_density_csv(rows: list[dict]) -> str:
    names = list(rows[-1]["layer_density"]) if rows else []
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["round", "density", *names])
    for r in rows:
        if "layer_density" in r:
            w.writerow([r["round"], f"{r['density']:.6f}", *(f"{r['layer_density'][n]:.6f}" for n in names)])
    return buf.getvalue()


def _measure(model: nn.Module, masks: MaskSet, dense_macs: int) -> dict:
    _, nonzero = model_metrics.macs(model, masks.masks)
    return {"density": masks.density(), "density_all": overall_density(model),
            "macs_fraction": nonzero / dense_macs, "layer_density": masks.layer_density()}


def run(spec: RunSpec, ctx: Context) -> list[dict]:
    """Run one grid cell to completion (resuming if it was interrupted); return its rows."""
    d = ctx.paths.run_dir(spec.paper, spec.id)
    rows_path = d / "rounds.jsonl"
    if (d / "DONE").exists():
        rows = read_jsonl(rows_path)
        for row in rows:
            ctx.report(row)
        return rows
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "spec.json", json.dumps(spec.to_dict(), indent=2, sort_keys=True) + "\n")
    if spec.procedure == "iterative":
        rows = _run_iterative(spec, ctx, d)
    elif spec.procedure == "gradual":
        rows = _run_gradual(spec, ctx, d)
    else:  # guarded by manifest validation
        raise ValueError(f"unknown procedure {spec.procedure!r} (expected one of: {', '.join(PROCEDURES)})")
    atomic_write_text(d / "layer_density.csv", _layer_density_csv(rows))
    (d / "DONE").touch()
    return rows


def _save_rows(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def _run_iterative(spec: RunSpec, ctx: Context, d: Path) -> list[dict]:
    device = ctx.torch_device
    dense_spec = spec.dense
    dense_row = run_dense(dense_spec, ctx)
    dense_dir = ctx.paths.dense_dir(dense_spec.id)
    data = get_data(spec.dataset, ctx)
    model = build_model(spec.model.arch, spec.num_classes, spec.model.width).to(device)
    model.load_state_dict(torch.load(dense_dir / "final.pt", map_location=device))
    masks = MaskSet.for_model(model, spec.pruning.prunable)
    dense_macs = model_metrics.macs(model)[0]
    rows_path, ckpt_path = d / "rounds.jsonl", d / "checkpoint.pt"
    t = spec.training
    keep_optimizer = not spec.pruning.fresh_optimizer_each_round
    opt = None
    start = 1
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device)
        model.load_state_dict(ck["model"])
        masks.set_masks_(ck["masks"])
        if keep_optimizer:
            opt = make_optimizer(t.optimizer, model.parameters())
            opt.load_state_dict(ck["optimizer"])
        start = ck["round"] + 1
        rows = read_jsonl(rows_path)[: start]  # rows 0..round; anything later was not checkpointed
    else:
        rows = [{**dense_row, **_measure(model, masks, dense_macs)}]
        _save_rows(rows_path, rows)
    for row in rows:
        ctx.report(row)

    rewind_state = None
    if spec.pruning.rewind_step is not None:
        name = "init.pt" if spec.pruning.rewind_step == 0 else "snapshot.pt"
        rewind_state = torch.load(dense_dir / name, map_location=device)
    spe = steps_per_epoch(data.n_train, t.batch_size, t.drop_last)
    retrain_steps = duration_steps(t.retrain, spe)
    for k in range(start, spec.pruning.rounds + 1):
        masks.prune_(spec.score, spec.allocation, spec.pruning.amount_per_round)
        if rewind_state is not None:
            model.load_state_dict(rewind_state)  # every parameter and buffer back to the rewind point
            masks.apply_()
        if opt is None or not keep_optimizer:
            opt = make_optimizer(t.optimizer, model.parameters())
        sched = make_scheduler(opt, t.lr_schedule, spe)
        res = train(model, data, steps=retrain_steps, optimizer=opt, scheduler=sched, batch_size=t.batch_size,
                    drop_last=t.drop_last, seed=stage_seed(spec.seed, f"round{k}"), hooks=_MaskHook(masks),
                    precision=t.precision)
        row = {"round": k, "steps": res.steps, **_measure(model, masks, dense_macs),
               **evaluate_model(model, data, spec.eval, spec.seed, t.precision)}
        rows.append(row)
        _save_rows(rows_path, rows)
        ckpt = {"round": k, "model": model.state_dict(), "masks": masks.state_dict()}
        if keep_optimizer:  # carried across rounds, so a resumed run must get it back
            ckpt["optimizer"] = opt.state_dict()
        atomic_save(ckpt, ckpt_path)
        ctx.report(row)
        if ctx.stop_after_round == k and k < spec.pruning.rounds:
            raise Interrupted(f"stopped after round {k} (test hook)")
    atomic_save(masks.state_dict(), d / "masks_final.pt")
    return rows


def _run_gradual(spec: RunSpec, ctx: Context, d: Path) -> list[dict]:
    device = ctx.torch_device
    t, g = spec.training, spec.pruning.gradual
    if g is None:
        raise ValueError("procedure 'gradual' needs pruning.gradual (start, end, update_every)")
    data = get_data(spec.dataset, ctx)
    torch.manual_seed(stage_seed(spec.seed, "init"))
    model = build_model(spec.model.arch, spec.num_classes, spec.model.width).to(device)
    masks = MaskSet.for_model(model, spec.pruning.prunable)
    dense_macs = model_metrics.macs(model)[0]
    spe = steps_per_epoch(data.n_train, t.batch_size, t.drop_last)
    steps = duration_steps(t.pretrain, spe)
    hook = GradualHook(masks, spec.score, spec.allocation, spec.target_sparsity or 0.0,
                       duration_steps(g.start, spe), duration_steps(g.end, spe), g.update_every, g.initial_sparsity)
    opt = make_optimizer(t.optimizer, model.parameters())
    res = train(model, data, steps=steps, optimizer=opt, scheduler=make_scheduler(opt, t.lr_schedule, spe),
                batch_size=t.batch_size, drop_last=t.drop_last, seed=stage_seed(spec.seed, "train"),
                hooks=hook, precision=t.precision)
    row = {"round": 1, "steps": res.steps, "mask_updates": hook.updates, **_measure(model, masks, dense_macs),
           **evaluate_model(model, data, spec.eval, spec.seed, t.precision)}
    _save_rows(d / "rounds.jsonl", [row])
    atomic_save(masks.state_dict(), d / "masks_final.pt")
    ctx.report(row)
    return [row]
