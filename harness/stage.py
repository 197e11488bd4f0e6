"""The one stage runner: training, evaluation, checkpoints, resume and rows for every procedure.

A procedure (:mod:`harness.pruning.methods`) says what its stages are; :func:`run_spec` gives it a :class:`Stage`,
the handle it calls down into:

* where the run starts: :meth:`Stage.begin_dense` (the shared dense pre-training, round 0) or
  :meth:`Stage.begin_fresh` (the seed's initialisation);
* what it does between trainings: :meth:`Stage.decide` carries out a mask decision (:mod:`harness.pruning.steps`:
  a nested pruning step, a re-selection, a mask chosen at initialisation, AP's cycle step) with the toolkit;
  :meth:`Stage.load`, :meth:`Stage.fresh_state`, :meth:`Stage.original` and :meth:`Stage.weights` move weights;
* its trainings: :meth:`Stage.train` (one training with a mask update, e.g. a round's retraining) and
  :meth:`Stage.train_stage` (one long stage: epoch and snapshot rows, a checkpoint at every epoch end, the final row);
* its units: :meth:`Stage.units` yields the rounds or cycles not done yet and checkpoints after each;
* its rows: :meth:`Stage.row` / :meth:`Stage.evaluated_row` and :meth:`Stage.finish` -- written here, once, by one
  owner (``rows.jsonl``, the tracker through ``Context.report``, ``epochs.csv``, ``layer_density.csv``).

One checkpoint format (``checkpoint.pt``): the model, the masks, the rows so far, and what is being resumed -- the
unit last finished (``unit``), or a stage stopped at an epoch end (its optimizer, LR scheduler, mask update's state
and the training loop's :class:`~harness.train.TrainState`), so a run killed anywhere restarts at its last checkpoint
and ends bit-identical to an uninterrupted one. Every stage draws its randomness from ``stage_seed(seed, stage)``.
A run whose loss or weights become non-finite stops at once and is marked ``DIVERGED`` (final, like ``DONE``).
Nothing here knows about Ray or MLflow: rows leave through ``Context.report``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from harness import evaluate as ev
from harness import metrics
from harness.checkpoints import atomic_save, load
from harness.config.identity import canonical_json, spec_hash
from harness.config.schema import DatasetConfig, EvalConfig
from harness.config.specs import DenseSpec, RunSpec, image_size
from harness.data.device import DeviceData
from harness.data.loading import open_data
from harness.data.stream import StreamData
from harness.models.build import build_model
from harness.paths import Folder, Paths, atomic_write_text, read_jsonl, write_json
from harness.pruning import ap, graph, pai, scores, updates
from harness.pruning.catalog import SCORES as SCORE_CATALOG
from harness.pruning.catalog import WEIGHTS_ONLY
from harness.pruning.hooks import UpdateHook
from harness.pruning.masks import MaskSet, overall_density, prunable_parameters
from harness.pruning.methods import dense_spec, procedure
from harness.pruning.methods.base import eval_epochs, snapshot_steps
from harness.pruning.steps import ChooseAtInit, CyclePrune, Masked, Prune, Reallocate, Reselection, Update
from harness.train import (Diverged, HookChain, StepHooks, TrainState, fast_path, make_optimizer, make_scheduler,
                           stage_seed, train)
from harness.units import duration_steps, steps_per_epoch

__all__ = ["Context", "Interrupted", "Stage", "Trained", "run_spec", "run_dense", "train_dense", "finished",
           "diverged_info", "folder", "read_rows", "row", "load_data", "fresh_model", "AXES"]

log = logging.getLogger(__name__)

AXES = ("round", "epoch", "snapshot", "final")


def row(axis: str, index: int, **values: Any) -> dict:
    """A row: ``{"axis", "index", <metric>: value, ...}`` (``layer_density`` and per-layer dicts may ride along)."""
    if axis not in AXES:
        raise ValueError(f"unknown row axis {axis!r} (expected one of: {', '.join(AXES)})")
    return {"axis": axis, "index": int(index), **values}


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
    smoke: bool = False  # every training runs only its first two and last two steps (prunebench run --smoke)

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def checkpointed(self, axis: str, index: int) -> None:
        """Called right after a checkpoint at (axis, index) was saved."""
        if self.stop_after == (axis, index):
            raise Interrupted(f"stopped after {axis} {index} (test hook)")


# ----------------------------------------------------------------------------- data and models

_DATA: dict[str, DeviceData] = {}


def load_data(ds: DatasetConfig, ctx: Context) -> DeviceData | StreamData:
    """The dataset on the device, loaded once per process (Ray reuses trial actors)."""
    key = f"{canonical_json(ds)}|{ctx.torch_device}|{ctx.data_root}"
    if key not in _DATA:
        _DATA.clear()  # keep one dataset resident
        _DATA[key] = open_data(ds, Path(ctx.data_root or ctx.paths.data), ctx.download, ctx.torch_device)
    return _DATA[key]


def fresh_model(spec: RunSpec | DenseSpec, device: torch.device | str, stream: str = "init") -> nn.Module:
    """The model drawn from its initialiser on the CPU with the (seed, ``stream``) stream, then moved to ``device``:
    the ``init`` stream is the initialisation every run of a seed shares; another stream is a fresh draw (AP's
    re-initialisation of cycle k)."""
    torch.manual_seed(stage_seed(spec.seed, stream))
    return build_model(spec.model.arch, spec.num_classes, spec.model.width, spec.model.init).to(device)


def _built(spec: RunSpec | DenseSpec, device: torch.device) -> nn.Module:
    return build_model(spec.model.arch, spec.num_classes, spec.model.width, spec.model.init).to(device)


# ----------------------------------------------------------------------------- run folders


def folder(paths: Paths, spec: RunSpec | DenseSpec) -> Folder:
    return paths.dense(spec.id) if isinstance(spec, DenseSpec) else paths.run(spec.paper, spec.id)


def diverged_info(paths: Paths, spec: RunSpec | DenseSpec) -> dict | None:
    """``{"step", "what"}`` when the run (or dense model) stopped because it diverged, else None."""
    f = folder(paths, spec).diverged
    return json.loads(f.read_text()) if f.exists() else None


def finished(paths: Paths, spec: RunSpec | DenseSpec) -> bool:
    """DONE or DIVERGED: nothing more to run."""
    f = folder(paths, spec)
    return f.done.exists() or f.diverged.exists()


def read_rows(paths: Paths, spec: RunSpec) -> list[dict]:
    return read_jsonl(folder(paths, spec).rows)


def _save_rows(f: Folder, rows: list[dict]) -> None:
    atomic_write_text(f.rows, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def _layer_density_csv(rows: list[dict]) -> str:
    rows = [r for r in rows if "layer_density" in r and r["axis"] != "final"]
    names = list(rows[-1]["layer_density"]) if rows else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["axis", "index", "density", *names])
    for r in rows:
        w.writerow([r["axis"], r["index"], f"{r['density']:.6f}", *(f"{r['layer_density'][n]:.6f}" for n in names)])
    return buf.getvalue()


# ----------------------------------------------------------------------------- dense pre-training


class _SnapshotHook(StepHooks):
    def __init__(self, model: nn.Module, step: int | None, path: Path):
        self.model, self.step, self.path = model, step, path

    def after_optimizer_step(self, step: int) -> None:
        if self.step is not None and step + 1 == self.step:
            atomic_save(self.model.state_dict(), self.path)


def train_dense(spec: DenseSpec, ctx: Context) -> Folder:
    """Train (or find in the content-addressed cache) the dense model of ``spec``; its folder."""
    f = folder(ctx.paths, spec)
    if f.done.exists():
        return f
    if f.diverged.exists():
        info = json.loads(f.diverged.read_text())
        raise Diverged(info["step"], f"{info['what']} of the dense pre-training")
    f.dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(f.spec, canonical_json(spec) + "\n")
    device = ctx.torch_device
    data = load_data(spec.dataset, ctx)
    write_json(f.data, ev.data_record(data, spec.dataset))
    model = fresh_model(spec, device)
    atomic_save(model.state_dict(), f.init)
    spe = steps_per_epoch(data.n_train, spec.batch_size, spec.drop_last)
    opt = make_optimizer(spec.optimizer, model.parameters())
    sched = make_scheduler(opt, spec.lr_schedule, spe)
    try:
        with fast_path(spec.channels_last, spec.compile) as fast:
            res = train(model, data, steps=duration_steps(spec.steps, spe), optimizer=opt, scheduler=sched,
                        batch_size=spec.batch_size, drop_last=spec.drop_last, seed=stage_seed(spec.seed, "pretrain"),
                        hooks=_SnapshotHook(model, spec.snapshot_step, f.snapshot), precision=spec.precision,
                        smoke=ctx.smoke)
    except Diverged as e:  # final, like DONE: every run that starts from it is diverged too
        write_json(f.diverged, {"step": e.step, "what": e.what})
        raise
    if ctx.smoke and spec.snapshot_step is not None and not f.snapshot.exists():
        atomic_save(model.state_dict(), f.snapshot)  # its step was skipped: any weights serve a smoke run
    atomic_save(model.state_dict(), f.final)
    write_json(f.train, {"steps": res.steps, "train_loss_running": res.train_loss,
                         **({"compile_s": fast.compile_s} if spec.compile else {})})
    f.done.touch()
    return f


def run_dense(spec: DenseSpec, ctx: Context, evaluation: EvalConfig) -> dict:
    """The dense model's row (round 0), evaluated with ``evaluation`` (evaluation settings are not part of the dense
    model's identity: each evaluation is cached under its own hash)."""
    f = train_dense(spec, ctx)
    cached = f.evaluation(spec_hash(evaluation))
    if cached.exists():
        return json.loads(cached.read_text())
    device = ctx.torch_device
    model = _built(spec, device)
    model.load_state_dict(load(f.final, device))
    steps = json.loads(f.train.read_text())["steps"]
    with fast_path(spec.channels_last, spec.compile):
        out = row("round", 0, steps=steps, density=1.0, density_all=overall_density(model),
                  **ev.evaluate_model(model, load_data(spec.dataset, ctx), evaluation, spec.seed, spec.precision))
    write_json(cached, out)
    return out


# ----------------------------------------------------------------------------- one run


def run_spec(spec: RunSpec, ctx: Context) -> list[dict]:
    """Run one grid cell to completion (resuming if it was interrupted); return its rows."""
    f = folder(ctx.paths, spec)
    if finished(ctx.paths, spec):
        rows = read_jsonl(f.rows)
        for r in rows:
            ctx.report(r)
        return rows
    f.dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(f.spec, json.dumps(spec.to_dict(), indent=2, sort_keys=True) + "\n")
    write_json(f.data, ev.data_record(load_data(spec.dataset, ctx), spec.dataset))
    t = spec.training
    stage = Stage(spec, ctx)
    try:
        with fast_path(t.channels_last, t.compile) as fast:
            stage.fast = fast
            procedure(spec).run(spec, stage)
    except Diverged as e:
        rows = [r for r in stage.rows if r["axis"] != "final"] + [row("final", 0, diverged=1.0, diverged_step=e.step)]
        _save_rows(f, rows)
        write_json(f.diverged, {"step": e.step, "what": e.what})
        ctx.report(rows[-1])
        return rows
    if not stage.rows or stage.rows[-1]["axis"] != "final":
        raise RuntimeError(f"procedure {spec.procedure!r} ended without its final row (Stage.finish)")
    atomic_write_text(f.layer_density, _layer_density_csv(stage.rows))
    f.done.touch()
    f.checkpoint.unlink(missing_ok=True)  # only for resuming: final.pt and masks_final.pt are the run's output
    return stage.rows


@dataclass
class Trained:
    """What one training did: its steps, running loss and accuracy, the per-epoch evaluations it was asked for, and
    its mask update's cumulative counts."""

    steps: int
    train_loss: float
    train_acc: float
    epochs: list[dict] = field(default_factory=list)
    update: dict = field(default_factory=dict)


MEASURES: dict[str, Callable[["Stage"], dict]] = {
    # extra values a row may ask for by name (Stage.row(measures=...))
    "densities": lambda s: ap.densities(s.model, s.masks),
    "masked_nonzero": lambda s: {"masked_nonzero": ap.masked_nonzero(s.masks)},
    "dnr": lambda s: ev.dead_neuron_metrics(s.model, s.data, s.spec.eval),
    "dnr_layers": lambda s: ev.dead_neuron_metrics(s.model, s.data, s.spec.eval, per_layer=True),
}


class Stage:
    """The handle a procedure's ``run`` calls down into (see the module docstring)."""

    def __init__(self, spec: RunSpec, ctx: Context):
        self.spec, self.ctx = spec, ctx
        self.folder = folder(ctx.paths, spec)
        self.device = ctx.torch_device
        self.data = load_data(spec.dataset, ctx)
        t = spec.training
        self.spe = steps_per_epoch(self.data.n_train, t.batch_size, t.drop_last)
        self._input = (3, image_size(spec.dataset), image_size(spec.dataset))  # one image, for MAC counts
        self.model: nn.Module | None = None
        self.masks: MaskSet | None = None
        self.rows: list[dict] = []
        self.optimizer: torch.optim.Optimizer | None = None  # kept across trainings when asked
        self.fast = None  # the fast path's switches and compile time (run_spec sets it)
        self._dense_macs = 0
        self._dense_dir: Folder | None = None
        self._optimizer_state: dict | None = None  # a resumed run's optimizer kept across units
        self._spans: dict[int, int] = {}  # smoke: unit -> how many units it stands for (span())
        ck = self.folder.checkpoint
        self._checkpoint = load(ck, self.device) if ck.exists() else None

    # ------------------------------------------------------------------ where a run starts

    @property
    def resuming(self) -> bool:
        """A checkpoint exists: the run goes on from it."""
        return self._checkpoint is not None

    def steps(self, duration: str) -> int:
        return duration_steps(duration, self.spe)

    def _adopt(self, model: nn.Module) -> None:
        self.model = model
        self.masks = MaskSet.for_model(model, self.spec.prunable)
        self._dense_macs = metrics.macs(model, input_shape=self._input)[0]

    def _restore(self) -> None:
        ck = self._checkpoint
        self.model.load_state_dict(ck["model"])
        self.masks.set_masks_(ck["masks"])
        self.rows = list(ck["rows"])
        for r in self.rows:
            self.ctx.report(r)

    def begin_dense(self, measures: tuple[str, ...] = ()) -> None:
        """Start from the shared dense pre-training (trained, or found in the cache): its final weights, and round 0
        -- its evaluation, the densities and ``measures`` -- as the first row. A resumed run starts from its
        checkpoint instead."""
        d = dense_spec(self.spec)
        dense_row = run_dense(d, self.ctx, self.spec.eval)
        self._dense_dir = folder(self.ctx.paths, d)
        self._adopt(_built(self.spec, self.device))
        if self.resuming:
            self._restore()
            return
        self.model.load_state_dict(load(self._dense_dir.final, self.device))
        values = {k: v for k, v in dense_row.items() if k not in ("axis", "index")}
        self.row_values("round", 0, values, measure=True, measures=measures)

    def begin_fresh(self) -> None:
        """Start from the seed's initialisation, every mask entry kept (a resumed run: from its checkpoint)."""
        self._adopt(fresh_model(self.spec, self.device))
        if self.resuming:
            self._restore()

    def original(self) -> dict:
        """A copy of the dense pre-training's initial state (every parameter and buffer)."""
        return load(self._dense_dir.init, self.device)

    def rewind_state(self, step: int) -> dict:
        """The dense pre-training's state after ``step`` steps (0: its initialisation)."""
        return load(self._dense_dir.init if step == 0 else self._dense_dir.snapshot, self.device)

    def fresh_state(self, stream: str) -> dict:
        """A fresh draw of the model's initialiser from the (seed, ``stream``) stream (every parameter and buffer)."""
        return fresh_model(self.spec, self.device, stream).state_dict()

    def load(self, state: dict) -> None:
        """The model takes ``state`` (every parameter and buffer: BN running statistics too), times the mask."""
        self.model.load_state_dict(state)
        self.masks.apply_()

    def weights(self, state: dict | None = None) -> dict:
        """Copies of the prunable weights (of ``state`` when given, else the model's)."""
        if state is not None:
            return {n: state[n] for n in self.masks.params}
        return {n: w.detach().clone() for n, w in self.masks.params.items()}

    def conv_names(self) -> list[str]:
        """The conv weights of the prunable set (DPF's own prunable set)."""
        return [n for n in prunable_parameters(self.model, "conv_weights") if n in self.masks.params]

    def alive(self, only: str = "all") -> int:
        """Unmasked entries of the prunable set (``only="conv"``: of its conv weights)."""
        names = self.conv_names() if only == "conv" else list(self.masks.params)
        return sum(int(self.masks.masks[n].sum()) for n in names)

    def size(self, only: str = "all") -> int:
        names = self.conv_names() if only == "conv" else list(self.masks.params)
        return sum(self.masks.masks[n].numel() for n in names)

    # ------------------------------------------------------------------ units

    def units(self, axis: str, indices, keep_optimizer: bool = False) -> Iterator[int]:
        """The units (rounds, cycles) not done yet, in order; after each, a checkpoint (the model, masks, rows, and
        the optimizer when it is kept across units)."""
        indices = list(indices)
        if self.ctx.smoke and len(indices) > 3:  # the first two units and the last, which stands for the ones between
            self._spans = {k: 1 for k in indices[:2]} | {indices[-1]: len(indices) - 2}
            indices = indices[:2] + indices[-1:]
        done = self._checkpoint.get("unit") if self._checkpoint is not None else None
        if done is not None and keep_optimizer:
            self._optimizer_state = self._checkpoint.get("optimizer")
        for k in indices:
            if done is not None and k <= done:
                continue
            yield k
            ck = {"unit": k, "axis": axis, "model": self.model.state_dict(), "masks": self.masks.state_dict(),
                  "rows": list(self.rows)}
            if keep_optimizer and self.optimizer is not None:  # carried across units: a resumed run needs it back
                ck["optimizer"] = self.optimizer.state_dict()
            atomic_save(ck, self.folder.checkpoint)
            self.ctx.checkpointed(axis, k)

    def span(self, k: int) -> int:
        """How many units unit ``k`` stands for: 1, except the last unit of a smoke run, which stands for every unit
        skipped before it (its decision compounds theirs, so the smoke run ends at the real final density)."""
        return self._spans.get(k, 1)

    # ------------------------------------------------------------------ mask decisions

    def decide(self, decision) -> dict:
        """Carry out a mask decision (:mod:`harness.pruning.steps`) and return what it counted."""
        if isinstance(decision, Prune):  # nested: the pruned weights are zeroed
            inputs = self.score_inputs(decision.score, decision.stream, decision.batches)
            with self._scoring(inputs is not None):
                return self.masks.prune_(decision.score, decision.allocation, decision.rate, inputs)
        if isinstance(decision, Reselection):
            return self._reselect(decision)
        if isinstance(decision, CyclePrune):
            inputs = None if decision.base_done is not None else self.score_inputs(decision.score, decision.stream)
            with self._scoring(inputs is not None):
                stats, _ = ap.prune_cycle(self.masks, decision.score, decision.allocation, decision.base_rate,
                                          decision.ap_rate, decision.reference, base_done=decision.base_done,
                                          alive_before=decision.alive_before, inputs=inputs)
            return stats
        if isinstance(decision, ChooseAtInit):
            return self._choose(decision)
        raise TypeError(f"no mask decision {decision!r}")

    @contextlib.contextmanager
    def _scoring(self, with_data: bool):
        """Around a score that runs the model: its buffers (BN running statistics) and gradients as they were."""
        if not with_data:
            yield
            return
        buffers = {n: b.detach().clone() for n, b in self.model.named_buffers()}
        try:
            yield
        finally:
            with torch.no_grad():
                for n, b in self.model.named_buffers():
                    b.copy_(buffers[n])
            self.model.zero_grad(set_to_none=True)

    def score_inputs(self, score: str, stream: str, batches: int = 1):
        """What a score that needs more than the weights reads, for a nested step of the run (None for a weight-only
        score): the model, ``batches`` training mini-batches drawn from ``stage_seed(seed, stream)`` (the same ones
        on every pass), cross-entropy, and a generator."""
        if SCORE_CATALOG[score].needs == WEIGHTS_ONLY:
            return None
        t = self.spec.training
        gen = torch.Generator(device=self.data.device).manual_seed(stage_seed(self.spec.seed, stream))
        start = gen.get_state()

        def draw():
            g = torch.Generator(device=gen.device)
            g.set_state(start)
            return (b for _, b in zip(range(batches), self.data.train_batches(g, t.batch_size, t.drop_last)))

        return self.masks.score_inputs(self.model, batches=draw, loss=F.cross_entropy, generator=gen)

    def _reselect(self, d: Reselection) -> dict:
        inside, rest = updates.part(self.masks, self.conv_names() if d.only == "conv" else list(self.masks.params))
        stats = inside.select_(scores.compute(d.score, inside.score_inputs(), dense=True), d.allocation,
                               density=d.density, eligible="all")
        inside.apply_()
        if rest.params:
            rest.apply_()
        self.masks.set_masks_({**rest.masks, **inside.masks})
        return stats

    def _choose(self, d: ChooseAtInit) -> dict:
        """The mask chosen at initialisation; what the choice measured is kept in the run folder (a resumed run gets
        its mask from its checkpoint and this record back)."""
        f = self.folder.mask_choice
        if self.resuming:
            return json.loads(f.read_text())
        gen = torch.Generator(device=self.data.device).manual_seed(stage_seed(self.spec.seed, "score"))
        t = self.spec.training
        info = pai.choose(d, self.model, self.masks, self.data, gen, t.batch_size, t.drop_last)
        write_json(f, info)
        return info

    # ------------------------------------------------------------------ trainings

    def _update_hook(self, update: Update | None, generator: torch.Generator | None = None) -> UpdateHook:
        if update is None:
            return UpdateHook()
        return updates.build(update, self.masks, conv_names=self.conv_names(), generator=generator)

    def _optimizer(self, config, keep: bool) -> torch.optim.Optimizer:
        if keep and self.optimizer is not None:
            return self.optimizer
        opt = make_optimizer(config or self.spec.training.optimizer, self.model.parameters())
        state = self._optimizer_state
        if keep and state is not None:  # a resumed run's kept optimizer
            opt.load_state_dict(state)
            self._optimizer_state = None
        if keep:
            self.optimizer = opt
        return opt

    def train(self, name: str, length: str, *, update: Update | None = None, optimizer=None, lr_schedule=None,
              keep_optimizer: bool = False, epoch_metrics: bool = False) -> Trained:
        """One training of ``length`` under ``update`` (default: the mask held, re-zeroed after every step), with a
        fresh optimizer and LR schedule (the optimizer kept across trainings with ``keep_optimizer``), drawing its
        data order from ``stage_seed(seed, name)``. ``epoch_metrics``: after every epoch the model is evaluated, with
        the post-training dead-neuron rate on the test set and the dynamic one over that epoch's training batches
        (``train_dnr``)."""
        t = self.spec.training
        hook = self._update_hook(update if update is not None else Masked())
        opt = self._optimizer(optimizer, keep_optimizer)
        sched = make_scheduler(opt, lr_schedule or t.lr_schedule, self.spe)
        hook.attach(self.model, opt)
        epochs: list[dict] = []
        hooks: list[StepHooks] = [hook]
        meter = None
        if epoch_metrics:
            meter = metrics.DeadNeuronMeter(self.model)  # the dynamic DNR over the training batches (ap.md 1.1)
            hooks.append(_EpochEval(self, meter, epochs))
        try:
            res = train(self.model, self.data, steps=self.steps(length), optimizer=opt, scheduler=sched,
                        batch_size=t.batch_size, drop_last=t.drop_last, seed=stage_seed(self.spec.seed, name),
                        hooks=HookChain(*hooks), precision=t.precision, smoke=self.ctx.smoke)
        finally:
            if meter is not None:
                meter.close()
        return Trained(res.steps, res.train_loss, res.train_acc, epochs, hook.totals())

    def train_stage(self, update: Update | None = None, name: str = "train") -> None:
        """The run as one long stage of ``training.pretrain`` under ``update``: rows at the evaluated epochs and every
        ``eval.snapshots``, a checkpoint at every epoch end (resumed mid-run), then the final row."""
        spec, t = self.spec, self.spec.training
        steps = self.steps(t.pretrain)
        wanted = eval_epochs(spec, self.spe, steps)
        gen = None
        if isinstance(update, Reallocate):
            gen = torch.Generator(device=self.data.device).manual_seed(stage_seed(spec.seed, "mask"))
        hook = self._update_hook(update, gen)
        opt = make_optimizer(t.optimizer, self.model.parameters())
        sched = make_scheduler(opt, t.lr_schedule, self.spe)
        state = None
        if self.resuming:
            ck = self._checkpoint
            opt.load_state_dict(ck["optimizer"])
            if sched is not None:
                sched.load_state_dict(ck["scheduler"])
            hook.load_state_dict(ck["update"])
            state = TrainState.from_dict(ck["train_state"])
        else:
            hook.begin()
        init_coords = self._initial_coordinates(hook)
        snap_at = set(snapshot_steps(spec, self.spe, steps))
        stage = self

        class Snapshot(StepHooks):
            """``eval.snapshots``: the mask-graph metrics of the current mask (with the weights the model evaluates)
            and the model's accuracy, as a ``snapshot`` row at that step (the PAGS paper's sampled subnetworks)."""

            def after_optimizer_step(self, step: int) -> None:
                if step + 1 not in snap_at or any(r["axis"] == "snapshot" and r["index"] == step + 1 for r in stage.rows):
                    return
                with hook.effective_weights():
                    values = {"density": stage.masks.density(),
                              **ev.graph_metrics(stage.masks, spec.eval, init_coordinates=init_coords),
                              **ev.evaluate_model(stage.model, stage.data, spec.eval, spec.seed, t.precision)}
                stage.model.train()
                stage.row_values("snapshot", step + 1, values, measure=False)

        class EpochEnd(StepHooks):
            def after_epoch(self, epoch: int, st: TrainState) -> None:
                if epoch in wanted:
                    stage._epoch_row(hook, epoch, st.step)
                atomic_save({"unit": None, "model": stage.model.state_dict(), "optimizer": opt.state_dict(),
                             "scheduler": sched.state_dict() if sched is not None else None,
                             "masks": stage.masks.state_dict(), "update": hook.state_dict(),
                             "train_state": st.to_dict(), "rows": list(stage.rows)}, stage.folder.checkpoint)
                stage.ctx.checkpointed("epoch", epoch)

        hook.attach(self.model, opt)
        train(self.model, self.data, steps=steps, optimizer=opt, scheduler=sched, batch_size=t.batch_size,
              drop_last=t.drop_last, seed=stage_seed(spec.seed, name),
              hooks=HookChain(hook, Snapshot() if snap_at else None, EpochEnd()), precision=t.precision, state=state,
              smoke=self.ctx.smoke)
        hook.finish()
        last_epoch = math.ceil(steps / self.spe)
        epoch_rows = [r for r in self.rows if r["axis"] == "epoch"]
        if not epoch_rows or epoch_rows[-1]["index"] != last_epoch:  # the budget ended mid-epoch
            self._epoch_row(hook, last_epoch, steps)
        self.finish(best=True, init_coordinates=init_coords)

    def _epoch_row(self, hook: UpdateHook, epoch: int, step: int) -> None:
        with hook.effective_weights():
            values = {"steps": step, **hook.metrics(), **self._measured(("measure",)),
                      **ev.evaluate_model(self.model, self.data, self.spec.eval, self.spec.seed,
                                          self.spec.training.precision)}
        self.row_values("epoch", epoch, values, measure=False)

    def _initial_coordinates(self, hook: UpdateHook) -> dict | None:
        """``eval.graph.reference: init``: the full-spectrum coordinates of the run's initial sparse network (its mask
        and weights before the first step), the origin its snapshots' and final distances are measured from;
        computed once and kept in the run folder, so a resumed run measures from the same point."""
        if self.spec.eval.graph.reference != "init":
            return None
        path = self.folder.graph_reference
        if path.exists():
            return {n: tuple(v) for n, v in json.loads(path.read_text()).items()}
        with hook.effective_weights():
            coords = graph.reference_coordinates({n: p.detach() for n, p in self.masks.params.items()},
                                                 self.spec.eval.graph, masks=self.masks.masks)
        write_json(path, {n: list(v) for n, v in coords.items()})
        return coords

    # ------------------------------------------------------------------ rows

    def _measured(self, names: tuple[str, ...]) -> dict:
        out = {}
        for n in names:
            out.update(ev.measure(self.model, self.masks, self._dense_macs, self._input) if n == "measure"
                       else MEASURES[n](self))
        return out

    def row_values(self, axis: str, index: int, values: dict, measure: bool = True,
                   measures: tuple[str, ...] = ()) -> dict:
        """Append a row of ``values`` (and, with ``measure``, the densities and nonzero MACs, plus ``measures``),
        save every row, report it."""
        extra = self._measured((("measure",) if measure else ()) + tuple(measures))
        r = row(axis, index, **{**values, **extra})
        self.rows.append(r)
        _save_rows(self.folder, self.rows)
        if any("epochs" in x for x in self.rows):
            atomic_write_text(self.folder.epochs, ap.epochs_csv(self.rows))
        self.ctx.report(r)
        return r

    def row(self, axis: str, index: int, measures: tuple[str, ...] = (), **values: Any) -> dict:
        """A row of ``values`` with the densities and nonzero MACs, and ``measures`` by name (:data:`MEASURES`)."""
        return self.row_values(axis, index, values, measure=True, measures=measures)

    def evaluated_row(self, axis: str, index: int, **values: Any) -> dict:
        """A row with the densities and nonzero MACs and the model's evaluation, plus ``values``."""
        evaluation = ev.evaluate_model(self.model, self.data, self.spec.eval, self.spec.seed,
                                       self.spec.training.precision)
        return self.row_values(axis, index, {**values, **evaluation}, measure=True)

    def finish(self, graph_layers: bool = False, dnr: bool = True, best: bool = False,
               init_coordinates: dict | None = None) -> None:
        """The final row: the last row's values (without per-epoch lists) with the final mask's graph metrics (over
        conv and linear weights only with ``graph_layers``), the post-training dead-neuron rate (``dnr``), the best
        epoch (``best``), and the compile time. The run's output is saved first: the final masks (``masks_final.pt``)
        and the model it ends with (``final.pt``: every parameter and buffer, masked weights exactly 0), the model
        every value of the final row describes."""
        atomic_save(self.masks.state_dict(), self.folder.masks_final)
        atomic_save(self.model.state_dict(), self.folder.final)
        last = [r for r in self.rows if r["axis"] == "epoch"][-1] if best else self.rows[-1]
        values = {k: v for k, v in last.items() if k not in ("axis", "index") and not isinstance(v, list)}
        masks = ap.layer_masks(self.masks) if graph_layers else self.masks
        values.update(ev.graph_metrics(masks, self.spec.eval, self.folder.graph, init_coordinates))
        if best:
            values.update(best_of(self.rows))
        if dnr:
            values.update(ev.dead_neuron_metrics(self.model, self.data, self.spec.eval))
        if self.spec.training.compile and self.fast is not None:
            values["compile_s"] = self.fast.compile_s
        self.row_values("final", 0, values, measure=False)


class _EpochEval(StepHooks):
    """After every epoch of a training: the model's evaluation, the post-training dead-neuron rate per site and the
    dynamic one over that epoch's training forward passes."""

    def __init__(self, stage: Stage, meter: metrics.DeadNeuronMeter, epochs: list[dict]):
        self.stage, self.meter, self.epochs = stage, meter, epochs

    def after_epoch(self, epoch: int, st: TrainState) -> None:
        s = self.stage
        train_dnr, train_sites = self.meter.read()  # this epoch's training forward passes, then reset
        dynamic = {"train_dnr": train_dnr, "train_dnr_layers": train_sites} if self.meter.sites else {}
        self.epochs.append({"epoch": epoch, "steps": st.step,
                            **ev.evaluate_model(s.model, s.data, s.spec.eval, s.spec.seed, s.spec.training.precision),
                            **ev.dead_neuron_metrics(s.model, s.data, s.spec.eval, per_layer=True), **dynamic})


def best_of(rows: list[dict]) -> dict:
    """Selections over the evaluated epochs: the best test accuracy (what DPF's third-party code reports) and, with a
    validation split, the test accuracy at the best-validation epoch (the first on ties, as the PAGS predecessor's
    pandas idxmax)."""
    epochs = [r for r in rows if r["axis"] == "epoch"]
    best = max(epochs, key=lambda r: r["test_acc"])  # max() keeps the first of equal values
    out = {"best_test_acc": best["test_acc"], "best_epoch": best["index"]}
    if "val_acc" in epochs[0]:
        by_val = max(epochs, key=lambda r: r["val_acc"])
        out.update(test_acc_at_best_val=by_val["test_acc"], best_val_acc=by_val["val_acc"], best_val_epoch=by_val["index"])
    return out
