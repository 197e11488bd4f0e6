"""Paper manifests: schema, strict loading, profiles, grid expansion and run identities.

A manifest (``paper_configs/<paper>.yaml``) is plain YAML. Loading it:

1. parses the YAML and applies a named profile (``profiles.<name>``) as a deep merge,
2. checks every key and value against the typed schema below, failing with a one-line
   :class:`ManifestError` that names the file, the key path and what was expected,
3. expands each experiment into frozen :class:`RunSpec` values, one per grid cell.

A run's identity is the hash of its spec's canonical JSON (OpenLTH style): the same manifest
always gives the same ids, and any change to a field that reaches a run changes its id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from harness.pruning.methods import METHODS, PROCEDURES

# Training-set sizes of the datasets the harness can load (before any subset).
TRAIN_SIZES = {"cifar10": 50_000, "cifar100": 50_000, "svhn": 73_257, "fashion_mnist": 60_000}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10, "fashion_mnist": 10}
_DURATION = re.compile(r"^([1-9][0-9]*|0)(it|ep)$")


class ManifestError(ValueError):
    """A user mistake in a manifest; ``str()`` is one line naming file, key and expectation."""


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class PaperInfo:
    key: str
    title: str
    venue: str
    year: int
    arxiv: str | None = None
    openreview: str | None = None
    code: str | None = None
    commit: str | None = None


@dataclass(frozen=True)
class DatasetConfig:
    """A dataset as a run sees it: source, normalisation and augmentation."""

    source: Literal["cifar10", "cifar100", "svhn", "fashion_mnist"]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_padding: int
    pad_mode: Literal["zeros", "reflect"]
    hflip: bool
    train_subset: int | None = None
    test_subset: int | None = None


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    width: float = 1.0


@dataclass(frozen=True)
class OptimizerConfig:
    name: Literal["adamw", "adam", "sgd"]
    lr: float
    weight_decay: float  # always explicit: AdamW's silent default 0.01 is written out
    betas: tuple[float, float] | None = None
    eps: float | None = None
    momentum: float | None = None
    nesterov: bool = False


@dataclass(frozen=True)
class LRScheduleConfig:
    name: Literal["constant", "multistep"]
    milestones: tuple[str, ...] = ()  # durations, e.g. ["150ep", "225ep"]
    gamma: float = 0.1


@dataclass(frozen=True)
class TrainingConfig:
    optimizer: OptimizerConfig
    lr_schedule: LRScheduleConfig
    batch_size: int
    drop_last: bool
    pretrain: str  # duration: "50000it" or "300ep"
    retrain: str  # per pruning round
    precision: Literal["fp32", "bf16"] = "fp32"


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int
    train_examples: int | None = None  # None = the whole split
    test_examples: int | None = None
    train_augmented: bool = True  # LAMP measures train accuracy on augmented images


@dataclass(frozen=True)
class GradualConfig:
    """Zhu & Gupta cubic schedule, evaluated per step, masks updated every ``update_every``."""

    start: str
    end: str
    update_every: int
    initial_sparsity: float = 0.0


@dataclass(frozen=True)
class PruningConfig:
    prunable: Literal["conv_and_linear_weights", "conv_weights", "all_weights"]
    amount_per_round: float = 0.2
    rounds: int = 1
    rewind_step: int | None = None  # None: no rewinding (fine-tune); k: rewind to step k
    fresh_optimizer_each_round: bool = True
    gradual: GradualConfig | None = None


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    methods: tuple[str, ...]
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    sparsities: tuple[float, ...] = ()  # target sparsities, for procedures that take one
    overrides: dict = field(default_factory=dict)  # deep-merged over defaults
    model_overrides: dict = field(default_factory=dict)  # model key -> deep-merged overrides
    resources: Resources | None = None
    note: str | None = None


@dataclass(frozen=True)
class ExpectedCells:
    """The paper's number for one or more grid cells; ``value: null`` until recorded."""

    experiment: str
    models: tuple[str, ...]
    methods: tuple[str, ...]
    rounds: tuple[int, ...]
    value: float | None
    tolerance: float | None = None
    datasets: tuple[str, ...] = ()
    source: str | None = None


@dataclass(frozen=True)
class Claim:
    """``a`` is at least ``b`` (mean test accuracy, within ``margin`` points) at every
    recorded density <= ``max_density``, for each listed model of ``experiment``."""

    id: str
    text: str
    experiment: str
    a: str
    b: tuple[str, ...]
    max_density: float = 1.0
    margin: float = 0.0
    models: tuple[str, ...] = ()
    source: str | None = None


@dataclass(frozen=True)
class Deviation:
    name: str
    reason: str


@dataclass(frozen=True)
class Defaults:
    training: TrainingConfig
    eval: EvalConfig


@dataclass(frozen=True)
class Manifest:
    paper: PaperInfo
    datasets: dict[str, DatasetConfig]
    models: dict[str, ModelConfig]
    defaults: Defaults
    pruning: PruningConfig
    experiments: tuple[Experiment, ...]
    resources: Resources = Resources()
    expected: tuple[ExpectedCells, ...] = ()
    claims: tuple[Claim, ...] = ()
    deviations: tuple[Deviation, ...] = ()
    profiles: dict = field(default_factory=dict)
    # set by load(): not part of the YAML
    profile: str = "full"
    path: str = ""
    digest: str = ""


# --------------------------------------------------------------------------- run specs


@dataclass(frozen=True)
class DenseSpec:
    """Everything that determines a dense pre-trained model: its cache key."""

    model: ModelConfig
    num_classes: int
    dataset: DatasetConfig
    optimizer: OptimizerConfig
    lr_schedule: LRScheduleConfig
    batch_size: int
    drop_last: bool
    steps: str
    precision: str
    eval: EvalConfig
    seed: int
    snapshot_step: int | None = None  # a rewind point other than the initialisation

    @property
    def id(self) -> str:
        return spec_hash(self)


@dataclass(frozen=True)
class RunSpec:
    """One grid cell, fully resolved. Frozen; its hash is the run id."""

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
    pruning: PruningConfig
    seed: int
    target_sparsity: float | None = None

    @property
    def id(self) -> str:
        return spec_hash(self)

    @property
    def dense(self) -> DenseSpec | None:
        """The dense pre-training this run starts from (None if it trains from scratch)."""
        if not PROCEDURES[self.procedure].needs_dense:
            return None
        t = self.training
        rewind = self.pruning.rewind_step
        return DenseSpec(
            model=self.model, num_classes=self.num_classes, dataset=self.dataset,
            optimizer=t.optimizer, lr_schedule=t.lr_schedule, batch_size=t.batch_size,
            drop_last=t.drop_last, steps=t.pretrain, precision=t.precision, eval=self.eval,
            seed=self.seed, snapshot_step=rewind if rewind else None,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunSpec":
        return _build(cls, data, "<spec>", "")


def canonical_json(obj: Any) -> str:
    return json.dumps(dataclasses.asdict(obj), sort_keys=True, separators=(",", ":"))


def spec_hash(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:16]


def duration_steps(duration: str, steps_per_epoch: int) -> int:
    """'50000it' -> 50000; '300ep' -> 300 * steps_per_epoch."""
    count, unit = _DURATION.match(duration).groups()
    return int(count) * (steps_per_epoch if unit == "ep" else 1)


def steps_per_epoch(n_train: int, batch_size: int, drop_last: bool) -> int:
    return n_train // batch_size if drop_last else -(-n_train // batch_size)


def train_size(ds: DatasetConfig) -> int:
    full = TRAIN_SIZES[ds.source]
    return min(full, ds.train_subset) if ds.train_subset else full


# --------------------------------------------------------------------------- loading


def load(path: str | Path, profile: str = "full") -> Manifest:
    """Load, profile-resolve and validate a manifest; raise ManifestError on any mistake."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise ManifestError(f"{where}: manifest file not found")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        raise ManifestError(f"{where}: not valid YAML{line}: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: expected a mapping at the top level")
    raw = _apply_profile(raw, profile, where)
    m = _build(Manifest, raw, where, "")
    _check(m, where)
    digest = hashlib.sha256((text + "\0" + profile).encode()).hexdigest()[:16]
    return dataclasses.replace(m, profile=profile, path=str(path.resolve()), digest=digest)


_PROFILE_KEYS = {"description", "experiments", "set", "grid", "titles", "deviations"}
_GRID_AXES = {"methods", "models", "datasets", "seeds", "sparsities"}


def _apply_profile(raw: dict, profile: str, where: str) -> dict:
    profiles = raw.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise ManifestError(f"{where}: profiles: expected a mapping of profile name -> overrides")
    if profile == "full":
        return raw
    if profile not in profiles:
        known = ", ".join(["full", *profiles]) or "full"
        raise ManifestError(f"{where}: profiles: no profile '{profile}' (expected one of: {known})")
    prof = profiles[profile] or {}
    key = f"profiles.{profile}"
    if not isinstance(prof, dict):
        raise ManifestError(f"{where}: {key}: expected a mapping")
    for k in prof:
        if k not in _PROFILE_KEYS:
            raise ManifestError(f"{where}: {key}.{k}: unknown key (expected one of: {', '.join(sorted(_PROFILE_KEYS))})")
    out = _deep_merge(raw, prof.get("set") or {})
    exps = out.get("experiments") or []
    if "experiments" in prof:
        wanted = prof["experiments"]
        names = [e.get("name") for e in exps if isinstance(e, dict)]
        for n in wanted:
            if n not in names:
                raise ManifestError(f"{where}: {key}.experiments: no experiment '{n}' (expected one of: {', '.join(map(str, names))})")
        exps = [e for e in exps if isinstance(e, dict) and e.get("name") in wanted]
    grid = prof.get("grid") or {}
    for axis in grid:
        if axis not in _GRID_AXES:
            raise ManifestError(f"{where}: {key}.grid.{axis}: unknown axis (expected one of: {', '.join(sorted(_GRID_AXES))})")
    titles = prof.get("titles") or {}
    for name in titles:
        if name not in [e.get("name") for e in exps]:
            raise ManifestError(f"{where}: {key}.titles.{name}: no such experiment in this profile")
    out["experiments"] = [{**e, **grid, **({"title": titles[e["name"]]} if e.get("name") in titles else {})}
                          for e in exps]
    out["deviations"] = list(out.get("deviations") or []) + list(prof.get("deviations") or [])
    return out


def _deep_merge(base: Any, over: Any) -> Any:
    """``over`` merged into ``base``: mappings key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: _deep_merge(base[k], v) if k in base else v for k, v in over.items()}}
    return over


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} numbers"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _build(tp: Any, value: Any, where: str, key: str) -> Any:
    """Convert ``value`` to type ``tp`` strictly, naming ``where``/``key`` on failure."""
    label = key or "(top level)"

    def fail(expect: str) -> typing.NoReturn:
        raise ManifestError(f"{where}: {label}: expected {expect}, got {value!r}"[:400])

    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            fail("a mapping")
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
        settable = {n for n in fields if n not in ("profile", "path", "digest")} if tp is Manifest else set(fields)
        for k in value:
            if k not in settable:
                raise ManifestError(f"{where}: {key + '.' if key else ''}{k}: unknown key (expected one of: {', '.join(sorted(settable))})")
        kwargs = {}
        for name in settable:
            f = fields[name]
            sub = f"{key}.{name}" if key else name
            if name in value:
                kwargs[name] = _build(hints[name], value[name], where, sub)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ManifestError(f"{where}: {sub}: missing (expected {_type_name(hints[name])})")
        return tp(**kwargs)
    if origin is Literal:
        if value not in typing.get_args(tp):
            fail(_type_name(tp))
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            fail(_type_name(tp))
        non_null = [a for a in args if a is not type(None)]
        return _build(non_null[0], value, where, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            fail(_type_name(tp))
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], v, where, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            fail(_type_name(tp))
        return tuple(_build(a, v, where, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            fail("a mapping")
        _, vt = typing.get_args(tp)
        return {str(k): _build(vt, v, where, f"{key}.{k}") for k, v in value.items()}
    if tp is dict:
        if not isinstance(value, dict):
            fail("a mapping")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail("a string")
        return value
    raise TypeError(f"unsupported schema type {tp}")  # a bug in the schema, not user input


# --------------------------------------------------------------------------- semantic checks


def _check(m: Manifest, where: str) -> None:
    from harness.models import MODELS

    def err(key: str, msg: str) -> typing.NoReturn:
        raise ManifestError(f"{where}: {key}: {msg}")

    for k, ds in m.datasets.items():
        for name in ("train_subset", "test_subset"):
            v = getattr(ds, name)
            if v is not None and v <= 0:
                err(f"datasets.{k}.{name}", f"expected a positive integer or null, got {v}")
        if any(s <= 0 for s in ds.std):
            err(f"datasets.{k}.std", "expected positive numbers")
        if ds.crop_padding < 0:
            err(f"datasets.{k}.crop_padding", f"expected >= 0, got {ds.crop_padding}")
    for k, mc in m.models.items():
        if mc.arch not in MODELS:
            err(f"models.{k}.arch", f"unknown model '{mc.arch}' (expected one of: {', '.join(sorted(MODELS))})")
        if not 0 < mc.width <= 4:
            err(f"models.{k}.width", f"expected a width multiplier in (0, 4], got {mc.width}")
    _check_pruning(m.pruning, "pruning", err)
    _check_resources(m.resources, "resources", err)
    if not m.experiments:
        err("experiments", "expected at least one experiment")
    names = set()
    for i, e in enumerate(m.experiments):
        key = f"experiments[{i}]"
        if e.name in names:
            err(f"{key}.name", f"duplicate experiment name '{e.name}'")
        names.add(e.name)
        for axis in ("methods", "models", "datasets", "seeds"):
            if not getattr(e, axis):
                err(f"{key}.{axis}", "expected a non-empty list")
        for j, meth in enumerate(e.methods):
            if meth not in METHODS:
                err(f"{key}.methods[{j}]", f"unknown method '{meth}' (expected one of: {', '.join(sorted(METHODS))})")
        for j, mk in enumerate(e.models):
            if mk not in m.models:
                err(f"{key}.models[{j}]", f"unknown model '{mk}' (expected a key of models: {', '.join(sorted(m.models))})")
        for j, dk in enumerate(e.datasets):
            if dk not in m.datasets:
                err(f"{key}.datasets[{j}]", f"unknown dataset '{dk}' (expected a key of datasets: {', '.join(sorted(m.datasets))})")
        for j, s in enumerate(e.sparsities):
            if not 0 <= s < 1:
                err(f"{key}.sparsities[{j}]", f"expected a sparsity in [0, 1), got {s}")
        for mk in e.model_overrides:
            if mk not in e.models and mk not in m.models:
                err(f"{key}.model_overrides.{mk}", f"unknown model key (expected one of: {', '.join(sorted(m.models))})")
        procs = {METHODS[meth].procedure for meth in e.methods}
        if any(PROCEDURES[p].needs_sparsity for p in procs) and not e.sparsities:
            err(f"{key}.sparsities", "expected target sparsities for a method that trains to a target")
        if e.resources:
            _check_resources(e.resources, f"{key}.resources", err)
        for mk in e.models:  # every resolved cell must validate
            _resolve(m, e, mk, where, key)
    for i, c in enumerate(m.expected):
        key = f"expected[{i}]"
        exp = next((e for e in m.experiments if e.name == c.experiment), None)
        if exp is None:
            continue  # a profile may drop experiments; their expectations stay dormant
        for j, mk in enumerate(c.models):
            if mk not in m.models:
                err(f"{key}.models[{j}]", f"unknown model '{mk}'")
        for j, meth in enumerate(c.methods):
            if meth not in METHODS:
                err(f"{key}.methods[{j}]", f"unknown method '{meth}'")
    for i, c in enumerate(m.claims):
        for j, meth in enumerate((c.a, *c.b)):
            if meth not in METHODS:
                err(f"claims[{i}]", f"unknown method '{meth}' (expected one of: {', '.join(sorted(METHODS))})")
        if not 0 < c.max_density <= 1:
            err(f"claims[{i}].max_density", f"expected a density in (0, 1], got {c.max_density}")


def _check_pruning(p: PruningConfig, key: str, err) -> None:
    if not 0 < p.amount_per_round < 1:
        err(f"{key}.amount_per_round", f"expected a fraction in (0, 1), got {p.amount_per_round}")
    if p.rounds < 1:
        err(f"{key}.rounds", f"expected a positive integer, got {p.rounds}")
    if p.rewind_step is not None and p.rewind_step < 0:
        err(f"{key}.rewind_step", f"expected a step >= 0 or null, got {p.rewind_step}")
    if p.gradual is not None:
        for name in ("start", "end"):
            _check_duration(getattr(p.gradual, name), f"{key}.gradual.{name}", err)
        if p.gradual.update_every < 1:
            err(f"{key}.gradual.update_every", "expected a positive integer")


def _check_resources(r: Resources, key: str, err) -> None:
    if r.cpu <= 0:
        err(f"{key}.cpu", f"expected a positive number of CPUs, got {r.cpu}")
    if r.gpu < 0:
        err(f"{key}.gpu", f"expected a GPU share >= 0, got {r.gpu}")


def _check_duration(value: str, key: str, err) -> None:
    if not _DURATION.match(value):
        err(key, f"expected a duration like '50000it' or '300ep', got {value!r}")


def _resolve(m: Manifest, e: Experiment, model_key: str, where: str, key: str) -> tuple[TrainingConfig, EvalConfig, PruningConfig]:
    """The training/eval/pruning config of one (experiment, model) cell."""
    base = {"training": dataclasses.asdict(m.defaults.training), "eval": dataclasses.asdict(m.defaults.eval),
            "pruning": dataclasses.asdict(m.pruning)}
    for sub, over in (("overrides", e.overrides), (f"model_overrides.{model_key}", e.model_overrides.get(model_key) or {})):
        if not isinstance(over, dict):
            raise ManifestError(f"{where}: {key}.{sub}: expected a mapping")
        for k in over:
            if k not in base:
                raise ManifestError(f"{where}: {key}.{sub}.{k}: unknown key (expected one of: eval, pruning, training)")
        base = _deep_merge(base, over)
    training = _build(TrainingConfig, base["training"], where, f"{key} (resolved).training")
    ev = _build(EvalConfig, base["eval"], where, f"{key} (resolved).eval")
    pruning = _build(PruningConfig, base["pruning"], where, f"{key} (resolved).pruning")

    def err(k: str, msg: str) -> typing.NoReturn:
        raise ManifestError(f"{where}: {key} (resolved).{k}: {msg}")

    for name in ("pretrain", "retrain"):
        _check_duration(getattr(training, name), f"training.{name}", err)
    for j, ms in enumerate(training.lr_schedule.milestones):
        _check_duration(ms, f"training.lr_schedule.milestones[{j}]", err)
    if training.batch_size < 1:
        err("training.batch_size", f"expected a positive integer, got {training.batch_size}")
    if training.optimizer.lr <= 0:
        err("training.optimizer.lr", f"expected a positive learning rate, got {training.optimizer.lr}")
    if training.optimizer.weight_decay < 0:
        err("training.optimizer.weight_decay", "expected >= 0")
    if ev.batch_size < 1:
        err("eval.batch_size", "expected a positive integer")
    _check_pruning(pruning, "pruning", err)
    return training, ev, pruning


# --------------------------------------------------------------------------- expansion


def expand(m: Manifest) -> list[RunSpec]:
    """Every grid cell of every experiment, in a stable order."""
    specs: list[RunSpec] = []
    seen: set[str] = set()
    for e in m.experiments:
        for model_key in e.models:
            training, ev, pruning = _resolve(m, e, model_key, m.path, e.name)
            for dataset_key in e.datasets:
                ds = m.datasets[dataset_key]
                for method_key in e.methods:
                    method = METHODS[method_key]
                    targets = e.sparsities if PROCEDURES[method.procedure].needs_sparsity else (None,)
                    for target in targets:
                        for seed in e.seeds:
                            spec = RunSpec(
                                paper=m.paper.key, experiment=e.name, method=method_key,
                                procedure=method.procedure, score=method.score,
                                allocation=method.allocation, model_key=model_key,
                                model=m.models[model_key], dataset_key=dataset_key, dataset=ds,
                                num_classes=NUM_CLASSES[ds.source], training=training, eval=ev,
                                pruning=pruning, seed=seed, target_sparsity=target,
                            )
                            if spec.id not in seen:
                                seen.add(spec.id)
                                specs.append(spec)
    return specs


def resources_for(m: Manifest, spec: RunSpec) -> Resources:
    e = next(e for e in m.experiments if e.name == spec.experiment)
    return e.resources or m.resources
