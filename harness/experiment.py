"""One RunSpec end to end: data -> model -> its procedure drives training -> rows and artifacts.

Every stage is idempotent (OpenLTH style): a finished dense model or run is marked ``DONE`` and
skipped; an interrupted run resumes from its last checkpoint (a round, or an epoch). Each stage
draws its randomness from ``stage_seed(seed, stage)``, so a resumed run equals an uninterrupted
one. A run whose loss or weights become non-finite stops at once and is marked ``DIVERGED``
(a final state, like ``DONE``: re-running would diverge again).

Nothing here knows about Ray or MLflow: progress leaves through ``Context.report`` (one row per
evaluation), which the scheduler or the local executor routes to tracking.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from harness import metrics as model_metrics
from harness.config import DatasetConfig, DenseSpec, EvalConfig, RunSpec, canonical_json, spec_hash
from harness.data import DeviceData
from harness.models import build_model
from harness.paths import Paths, atomic_save, atomic_write_text, read_jsonl, write_json
from harness.pruning import graph
from harness.pruning.masks import MaskSet, overall_density
from harness.pruning.methods.base import row
from harness.train import (Diverged, StepHooks, evaluate, fast_path, make_optimizer, make_scheduler, stage_seed,
                           train)
from harness.units import duration_steps, steps_per_epoch


class Interrupted(RuntimeError):
    """Raised by the ``stop_after`` test hook to simulate a crash."""


@dataclass
class Context:
    paths: Paths
    data_root: Path | None = None
    download: bool = False
    device: str | None = None
    report: Callable[[dict], None] = field(default=lambda row: None)
    stop_after: tuple[str, int] | None = None  # tests: simulate a crash after this checkpoint

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def checkpointed(self, axis: str, index: int) -> None:
        """Called by a procedure right after it saved a checkpoint at (axis, index)."""
        if self.stop_after == (axis, index):
            raise Interrupted(f"stopped after {axis} {index} (test hook)")


# ----------------------------------------------------------------------------- data

_DATA: dict[str, DeviceData] = {}


def get_data(ds: DatasetConfig, ctx: Context) -> DeviceData:
    """The dataset on the device, loaded once per process (Ray reuses trial actors)."""
    key = f"{canonical_json(ds)}|{ctx.torch_device}|{ctx.data_root}"
    if key not in _DATA:
        _DATA.clear()  # keep one dataset resident
        _DATA[key] = DeviceData.load(
            ds.source, Path(ctx.data_root or ctx.paths.data), ctx.download, ds.mean, ds.std,
            ds.crop_padding, ds.pad_mode, ds.hflip, ds.train_subset, ds.test_subset, ctx.torch_device, ds.validation)
    return _DATA[key]


def data_record(data: DeviceData, ds: DatasetConfig) -> dict:
    """What a run trained and was evaluated on, for its MLflow dataset input: the content digest of
    the images and labels actually used (after subsets and the validation split) and split sizes."""
    if data.digest is None:
        h = hashlib.sha256()
        for t in (data.train_x, data.train_y, data.test_x, data.test_y, data.val_x, data.val_y):
            if t is not None:
                h.update(t.contiguous().cpu().numpy().tobytes())
        data.digest = h.hexdigest()[:16]
    return {"source": ds.source, "digest": data.digest, "train": data.n_train, "test": data.n_test,
            "validation": 0 if data.val_x is None else int(data.val_x.shape[0]),
            "train_subset": ds.train_subset, "test_subset": ds.test_subset}


def evaluate_model(model: nn.Module, data: DeviceData, ev: EvalConfig, seed: int, precision: str) -> dict:
    gen = torch.Generator(device=data.device).manual_seed(stage_seed(seed, "eval"))
    split = "train_augmented" if ev.train_augmented else "train"
    train_acc, train_loss = evaluate(
        model, data.eval_batches(split, ev.batch_size, ev.train_examples, generator=gen), precision)
    test_acc, test_loss = evaluate(model, data.eval_batches("test", ev.batch_size, ev.test_examples), precision)
    out = {"test_acc": test_acc, "test_loss": test_loss, "train_acc": train_acc, "train_loss": train_loss}
    if data.val_x is not None:
        out["val_acc"], out["val_loss"] = evaluate(model, data.eval_batches("val", ev.batch_size), precision)
    return out


def fresh_model(spec: RunSpec | DenseSpec, device: torch.device) -> nn.Module:
    """The model at its initialisation: the same weights for every run of a seed."""
    torch.manual_seed(stage_seed(spec.seed, "init"))
    return build_model(spec.model.arch, spec.num_classes, spec.model.width, spec.model.init).to(device)


def graph_metrics(model: nn.Module, masks: MaskSet, ev: EvalConfig, d: Path,
                  init_coordinates: dict | None = None) -> dict:
    """The mask-graph metrics of a run's final mask (pags.md 3.3): ``graph.csv`` (one row per layer)
    in the run folder, and the model-level numbers (``graph_*``) for the final row. ``init_coordinates``: the
    reference network's coordinates for ``graph.reference: init`` (default: the dense network's)."""
    rows = graph.layer_table({n: p.detach() for n, p in masks.params.items()}, masks.masks, ev.graph,
                             init_coordinates=init_coordinates)
    atomic_write_text(d / "graph.csv", graph.to_csv(rows))
    return graph.summary(rows, ev.graph)


def dead_neuron_metrics(model: nn.Module, data: DeviceData, ev: EvalConfig, per_layer: bool = False) -> dict:
    """The harness-defined dynamic dead-neuron rate (:func:`harness.metrics.dead_neuron_rate`) on the test split
    (``ev.test_examples``, batches of ``ev.batch_size``): ``{"dead_neuron_rate": overall}``, plus
    ``{"dnr_layers": {site: rate}}`` with ``per_layer``. Empty for a model without ``nn.ReLU`` modules."""
    overall, layers = model_metrics.dead_neuron_rate(model, data.eval_batches("test", ev.batch_size, ev.test_examples))
    if not layers:
        return {}
    return {"dead_neuron_rate": overall, **({"dnr_layers": layers} if per_layer else {})}


def measure(model: nn.Module, masks: MaskSet, dense_macs: int) -> dict:
    """Densities (prunable set and all parameters), nonzero-MAC fraction, per-layer densities."""
    _, nonzero = model_metrics.macs(model, masks.masks)
    return {"density": masks.density(), "density_all": overall_density(model),
            "macs_fraction": nonzero / dense_macs, "layer_density": masks.layer_density()}


# ----------------------------------------------------------------------------- dense


class _SnapshotHook(StepHooks):
    def __init__(self, model: nn.Module, step: int | None, path: Path):
        self.model, self.step, self.path = model, step, path

    def after_optimizer_step(self, step: int) -> None:
        if self.step is not None and step + 1 == self.step:
            atomic_save(self.model.state_dict(), self.path)


def train_dense(spec: DenseSpec, ctx: Context) -> Path:
    """Train (or find in the content-addressed cache) the dense model of ``spec``; its folder."""
    d = ctx.paths.dense_dir(spec.id)
    if (d / "DONE").exists():
        return d
    if (d / "DIVERGED").exists():
        info = json.loads((d / "DIVERGED").read_text())
        raise Diverged(info["step"], f"{info['what']} of the dense pre-training")
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "spec.json", canonical_json(spec) + "\n")
    device = ctx.torch_device
    data = get_data(spec.dataset, ctx)
    write_json(d / "data.json", data_record(data, spec.dataset))
    model = fresh_model(spec, device)
    atomic_save(model.state_dict(), d / "init.pt")
    spe = steps_per_epoch(data.n_train, spec.batch_size, spec.drop_last)
    steps = duration_steps(spec.steps, spe)
    opt = make_optimizer(spec.optimizer, model.parameters())
    sched = make_scheduler(opt, spec.lr_schedule, spe)
    try:
        with fast_path(spec.channels_last, spec.compile) as fast:
            res = train(model, data, steps=steps, optimizer=opt, scheduler=sched, batch_size=spec.batch_size,
                        drop_last=spec.drop_last, seed=stage_seed(spec.seed, "pretrain"),
                        hooks=_SnapshotHook(model, spec.snapshot_step, d / "snapshot.pt"), precision=spec.precision)
    except Diverged as e:  # final, like DONE: every run that starts from it is diverged too
        write_json(d / "DIVERGED", {"step": e.step, "what": e.what})
        raise
    atomic_save(model.state_dict(), d / "final.pt")
    write_json(d / "train.json", {"steps": res.steps, "train_loss_running": res.train_loss,
                                  **({"compile_s": fast.compile_s} if spec.compile else {})})
    (d / "DONE").touch()
    return d


def run_dense(spec: DenseSpec, ctx: Context, ev: EvalConfig) -> dict:
    """The dense model's row (round 0), evaluated with ``ev`` (evaluation settings are not part
    of the dense model's identity: each evaluation is cached under its own hash)."""
    d = train_dense(spec, ctx)
    cached = d / f"eval-{spec_hash(ev)}.json"
    if cached.exists():
        out = json.loads(cached.read_text())
    else:
        device = ctx.torch_device
        model = build_model(spec.model.arch, spec.num_classes, spec.model.width, spec.model.init).to(device)
        model.load_state_dict(torch.load(d / "final.pt", map_location=device))
        steps = json.loads((d / "train.json").read_text())["steps"]
        with fast_path(spec.channels_last, spec.compile):
            out = row("round", 0, steps=steps, density=1.0, density_all=overall_density(model),
                      **evaluate_model(model, get_data(spec.dataset, ctx), ev, spec.seed, spec.precision))
        write_json(cached, out)
    return out


# ----------------------------------------------------------------------------- runs


def layer_density_csv(rows: list[dict]) -> str:
    rows = [r for r in rows if "layer_density" in r and r["axis"] != "final"]
    names = list(rows[-1]["layer_density"]) if rows else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["axis", "index", "density", *names])
    for r in rows:
        w.writerow([r["axis"], r["index"], f"{r['density']:.6f}", *(f"{r['layer_density'][n]:.6f}" for n in names)])
    return buf.getvalue()


def save_rows(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def stage_dir(paths: Paths, spec: RunSpec | DenseSpec) -> Path:
    return paths.dense_dir(spec.id) if isinstance(spec, DenseSpec) else paths.run_dir(spec.paper, spec.id)


def diverged_info(paths: Paths, spec: RunSpec | DenseSpec) -> dict | None:
    """``{"step", "what"}`` when the run (or dense model) stopped because it diverged, else None."""
    f = stage_dir(paths, spec) / "DIVERGED"
    return json.loads(f.read_text()) if f.exists() else None


def finished(paths: Paths, spec: RunSpec | DenseSpec) -> bool:
    """DONE or DIVERGED: nothing more to run."""
    d = stage_dir(paths, spec)
    return (d / "DONE").exists() or (d / "DIVERGED").exists()


def run(spec: RunSpec, ctx: Context) -> list[dict]:
    """Run one grid cell to completion (resuming if it was interrupted); return its rows."""
    d = ctx.paths.run_dir(spec.paper, spec.id)
    rows_path = d / "rows.jsonl"
    if finished(ctx.paths, spec):
        rows = read_jsonl(rows_path)
        for r in rows:
            ctx.report(r)
        return rows
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "spec.json", json.dumps(spec.to_dict(), indent=2, sort_keys=True) + "\n")
    write_json(d / "data.json", data_record(get_data(spec.dataset, ctx), spec.dataset))
    t = spec.training
    try:
        with fast_path(t.channels_last, t.compile) as fast:
            rows = spec.proc.run(spec, _with_compile_time(ctx, fast) if t.compile else ctx, d)
        if t.compile and rows:  # the final row as reported, with its compile time, in rows.jsonl
            rows[-1].setdefault("compile_s", fast.compile_s)
            save_rows(rows_path, rows)
    except Diverged as e:
        info = {"step": e.step, "what": e.what}
        rows = read_jsonl(rows_path)
        rows = [r for r in rows if r["axis"] != "final"] + [row("final", 0, diverged=1.0, diverged_step=e.step)]
        save_rows(rows_path, rows)
        write_json(d / "DIVERGED", info)
        ctx.report(rows[-1])
        return rows
    atomic_write_text(d / "layer_density.csv", layer_density_csv(rows))
    (d / "DONE").touch()
    return rows


def _with_compile_time(ctx: Context, fast) -> Context:
    """``ctx`` whose final row carries ``compile_s``: the seconds this run's compiled stages spent in
    their compiling steps (the procedure saves the row it reports, so the value reaches its rows.jsonl
    through :func:`run` too)."""

    def report(r: dict) -> None:
        if r.get("axis") == "final":
            r.setdefault("compile_s", fast.compile_s)
        ctx.report(r)

    return dataclasses.replace(ctx, report=report)


def read_rows(paths: Paths, spec: RunSpec) -> list[dict]:
    return read_jsonl(paths.run_dir(spec.paper, spec.id) / "rows.jsonl")


def artifacts(paths: Paths, spec: RunSpec) -> list[Path]:
    d = paths.run_dir(spec.paper, spec.id)
    names = ("spec.json", "rows.jsonl", "layer_density.csv", "graph.csv", "masks_final.pt", "ap_epochs.csv", "DIVERGED")
    return [d / n for n in names]  # the tracker uploads those that exist
