"""Grid expansion: one frozen :class:`RunSpec` per cell, and the dense model it starts from.

A cell is (experiment, model, dataset, method, target sparsity, seed). Its training, evaluation
and procedure parameters are resolved here: manifest defaults <- experiment ``overrides`` <-
``model_overrides`` <- the method's own parameters.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from harness.config.identity import spec_hash
from harness.config.profiles import deep_merge
from harness.config.schema import (DatasetConfig, EvalConfig, Experiment, Manifest, ManifestError, ModelConfig,
                                   OptimizerConfig, LRScheduleConfig, PruningConfig, Resources,
                                   TrainingConfig)
from harness.data import NUM_CLASSES, TRAIN_SIZES


@dataclass(frozen=True)
class DenseSpec:
    """Everything that determines a dense pre-trained model: its cache key (no evaluation settings)."""

    model: ModelConfig
    num_classes: int
    dataset: DatasetConfig
    optimizer: OptimizerConfig
    lr_schedule: LRScheduleConfig
    batch_size: int
    drop_last: bool
    steps: str
    precision: str
    seed: int
    snapshot_step: int | None = None  # a rewind point other than the initialisation
    channels_last: bool = False  # the fast-path switches it was trained under (TrainingConfig's)
    compile: bool = False

    @property
    def id(self) -> str:
        return spec_hash(self)


@dataclass(frozen=True)
class RunSpec:
    """One grid cell, fully resolved. Frozen; its hash (defaults left out) is the run id."""

    paper: str
    experiment: str
    method: str
    procedure: str
    score: str
    allocation: str
    model_key: str
    model: ModelConfig
    dataset_key: str
    dataset: DatasetConfig
    num_classes: int
    training: TrainingConfig
    eval: EvalConfig
    prunable: str
    params: Any  # the procedure's typed parameters (a frozen dataclass)
    seed: int
    target_sparsity: float | None = None

    @property
    def id(self) -> str:
        return spec_hash(self)

    @property
    def proc(self):
        """The procedure object that runs this spec."""
        from harness.pruning.methods import PROCEDURES

        return PROCEDURES[self.procedure]

    @property
    def dense(self) -> DenseSpec | None:
        """The dense pre-training this run starts from (None if it trains from scratch)."""
        return self.proc.dense_spec(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunSpec":
        from harness.config.load import build
        from harness.pruning.methods import PROCEDURES

        data = dict(data)
        params = build(PROCEDURES[data["procedure"]].Params, data.pop("params"), "<spec>", "params")
        spec = build(cls, {**data, "params": {}}, "<spec>", "")
        return dataclasses.replace(spec, params=params)


def dense_from_dict(data: dict) -> DenseSpec:
    from harness.config.load import build

    return build(DenseSpec, data, "<spec>", "")


def train_size(ds: DatasetConfig) -> int:
    full = TRAIN_SIZES[ds.source]
    return (min(full, ds.train_subset) if ds.train_subset else full) - ds.validation


def method_parts(m: Manifest, key: str):
    """(registered method, its parameter overrides) for a method key of the manifest."""
    from harness.pruning.methods import METHODS

    if key in m.methods:
        mc = m.methods[key]
        base = METHODS[mc.method]
        return base, deep_merge(dict(base.params), dict(mc.params))
    base = METHODS[key]
    return base, dict(base.params)


def resolve_cell(m: Manifest, e: Experiment, model_key: str, method_key: str, where: str,
                 key: str) -> tuple[TrainingConfig, EvalConfig, str, Any]:
    """The training, evaluation, prunable set and procedure parameters of one cell."""
    from harness.config.load import build, check_duration, check_training
    from harness.pruning.methods import PROCEDURES

    base = {"training": dataclasses.asdict(m.defaults.training), "eval": dataclasses.asdict(m.defaults.eval),
            "pruning": {"prunable": m.pruning.prunable, **m.pruning.sections}}
    for sub, over in (("overrides", e.overrides), (f"model_overrides.{model_key}", e.model_overrides.get(model_key) or {})):
        if not isinstance(over, dict):
            raise ManifestError(f"{where}: {key}.{sub}: expected a mapping")
        for k in over:
            if k not in base:
                raise ManifestError(f"{where}: {key}.{sub}.{k}: unknown key (expected one of: eval, pruning, training)")
        base = deep_merge(base, over)
    training = build(TrainingConfig, base["training"], where, f"{key} (resolved).training")
    ev = build(EvalConfig, base["eval"], where, f"{key} (resolved).eval")

    def err(k: str, msg: str):
        raise ManifestError(f"{where}: {key} (resolved).{k}: {msg}")

    check_training(training, err)
    if ev.batch_size < 1:
        err("eval.batch_size", "expected a positive integer")
    for j, d in enumerate(ev.epochs):
        check_duration(d, f"eval.epochs[{j}]", err)
    if ev.every is not None:
        check_duration(ev.every, "eval.every", err)
    if ev.snapshots is not None:
        check_duration(ev.snapshots, "eval.snapshots", err)
    pruning = dict(base["pruning"])
    prunable = build(typing.get_type_hints(PruningConfig)["prunable"], pruning.pop("prunable", None),
                     where, f"{key} (resolved).pruning.prunable")
    method, method_params = method_parts(m, method_key)
    proc = PROCEDURES[method.procedure]
    for name in pruning:
        if name not in PROCEDURES:
            err(f"pruning.{name}", f"unknown key (expected prunable or a procedure: {', '.join(sorted(PROCEDURES))})")
    raw = deep_merge(pruning.get(method.procedure) or {}, method_params)
    params = build(proc.Params, raw, where, f"{key} (resolved).pruning.{method.procedure}"
                   + (f" (method {method_key})" if method_params else ""))
    proc.check(params, lambda k, msg: err(f"pruning.{method.procedure}.{k}", msg))
    return training, ev, prunable, params


def expand(m: Manifest) -> list[RunSpec]:
    """Every grid cell of every experiment, in a stable order."""
    specs: list[RunSpec] = []
    seen: set[str] = set()
    for e in m.experiments:
        cells: dict[tuple[str, str], tuple] = {}
        for model_key in e.models:
            for dataset_key in e.datasets:
                ds = m.datasets[dataset_key]
                for method_key in e.methods:
                    if (model_key, method_key) not in cells:
                        cells[model_key, method_key] = resolve_cell(m, e, model_key, method_key, m.path, e.name)
                    training, ev, prunable, params = cells[model_key, method_key]
                    method, _ = method_parts(m, method_key)
                    targets = e.model_sparsities.get(model_key, e.sparsities) if method.proc.needs_sparsity else (None,)
                    for target in targets:
                        for seed in e.seeds:
                            spec = RunSpec(
                                paper=m.paper.key, experiment=e.name, method=method_key,
                                procedure=method.procedure, score=method.score,
                                allocation=method.allocation, model_key=model_key,
                                model=m.models[model_key], dataset_key=dataset_key, dataset=ds,
                                num_classes=NUM_CLASSES[ds.source], training=training, eval=ev,
                                prunable=prunable, params=params, seed=seed, target_sparsity=target,
                            )
                            if spec.id not in seen:
                                seen.add(spec.id)
                                specs.append(spec)
    return specs


def resources_for(m: Manifest, spec: RunSpec) -> Resources:
    return m.experiment(spec.experiment).resources or m.resources
