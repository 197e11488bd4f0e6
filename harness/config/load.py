"""Loading a manifest: YAML -> profile -> strict typed build -> semantic checks.

Every mistake is a :class:`ManifestError` whose text is one line naming the file, the key path
and what was expected. :func:`build` is the one strict converter from plain data to the schema's
dataclasses; it is also how specs are read back from disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from harness.config.profiles import apply_profile, profile_names
from harness.config.schema import NOT_YAML, Manifest, ManifestError, PruningConfig, Resources, TrainingConfig
from harness.units import is_duration


def read_yaml(path: str | Path) -> tuple[dict, str]:
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
    return raw, text


def load(path: str | Path, profile: str = "full") -> Manifest:
    """Load, profile-resolve and validate a manifest; raise ManifestError on any mistake."""
    raw, text = read_yaml(path)
    where = str(path) if profile == "full" else f"{path} [profile {profile}]"
    merged = apply_profile(raw, profile, str(path))
    m = build(Manifest, merged, where, "")
    check(m, where)
    digest = hashlib.sha256((text + "\0" + profile).encode()).hexdigest()[:16]
    own = {e.get("name"): e.get("title") for e in raw.get("experiments") or [] if isinstance(e, dict)}
    exps = tuple(dataclasses.replace(e, paper_title=own.get(e.name)) if own.get(e.name) not in (None, e.title) else e
                 for e in m.experiments)
    return dataclasses.replace(m, experiments=exps, profile=profile, path=str(Path(path).resolve()), digest=digest)


def load_all(path: str | Path, profile: str | None = None) -> list[Manifest]:
    """The manifest under every profile (``full`` first), or under ``profile`` only."""
    raw, _ = read_yaml(path)
    names = [profile] if profile else ["full", *profile_names(raw)]
    return [load(path, name) for name in names]


# --------------------------------------------------------------------------- strict typed build


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(type_name(a) for a in args) + " or null"
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {type_name(args[0])}"
        return f"a list of {len(args)} {'numbers' if all(a in (int, float) for a in args) else 'items'}"
    if origin is dict or tp is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def build(tp: Any, value: Any, where: str, key: str) -> Any:
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
        settable = {n for n in fields if n not in NOT_YAML.get(tp.__name__, ())}
        value = dict(value)
        extra = {}
        if tp is PruningConfig:  # pruning.<procedure>: raw sections, typed per cell
            from harness.pruning.methods import PROCEDURES

            extra["sections"] = {k: value.pop(k) for k in list(value) if k in PROCEDURES}
            for k, sec in extra["sections"].items():
                if not isinstance(sec, dict):
                    raise ManifestError(f"{where}: {key}.{k}: expected a mapping of {k} parameters, got {sec!r}")
            expected = sorted(settable) + sorted(PROCEDURES)
        else:
            expected = sorted(settable)
        for k in value:
            if k not in settable:
                raise ManifestError(f"{where}: {key + '.' if key else ''}{k}: unknown key "
                                    f"(expected one of: {', '.join(expected)})")
        kwargs = dict(extra)
        for name, f in fields.items():  # schema order: the first missing field is named
            if name not in settable:
                continue
            sub = f"{key}.{name}" if key else name
            if name in value:
                kwargs[name] = build(hints[name], value[name], where, sub)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ManifestError(f"{where}: {sub}: missing (expected {type_name(hints[name])})")
        try:
            return tp(**kwargs)
        except (ValueError, TypeError) as e:  # a type's own check (e.g. GraphParams)
            raise ManifestError(f"{where}: {label}: {e}") from None
    if tp is Any:
        return value
    if origin is Literal:
        if value not in typing.get_args(tp):
            fail(type_name(tp))
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            fail(type_name(tp))
        non_null = [a for a in args if a is not type(None)]
        return build(non_null[0], value, where, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            fail(type_name(tp))
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(build(args[0], v, where, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            fail(type_name(tp))
        return tuple(build(a, v, where, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            fail("a mapping")
        _, vt = typing.get_args(tp)
        return {str(k): build(vt, v, where, f"{key}.{k}") for k, v in value.items()}
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

BF16_DEVIATION = "bf16_autocast"  # the deviation a manifest training in bf16 must list


def check_duration(value: str, key: str, err) -> None:
    if not is_duration(value):
        err(key, f"expected a duration like '50000it' or '300ep', got {value!r}")


def check_training(t: TrainingConfig, err) -> None:
    for name in ("pretrain", "retrain"):
        check_duration(getattr(t, name), f"training.{name}", err)
    for j, ms in enumerate(t.lr_schedule.milestones):
        check_duration(ms, f"training.lr_schedule.milestones[{j}]", err)
    if t.batch_size < 1:
        err("training.batch_size", f"expected a positive integer, got {t.batch_size}")
    ls = t.lr_schedule
    if ls.name == "warmup_fixed":
        if ls.warmup_per_iter < 0 or ls.warmup_iters < 0:
            err("training.lr_schedule", "expected warmup_per_iter >= 0 and warmup_iters >= 0")
        for j, (epoch, lr) in enumerate(ls.fixed):
            if epoch < 0 or lr < 0:
                err(f"training.lr_schedule.fixed[{j}]", f"expected [epoch >= 0, lr >= 0], got [{epoch}, {lr}]")
    elif ls.warmup_per_iter or ls.warmup_iters or ls.fixed:
        err("training.lr_schedule", f"warmup_per_iter, warmup_iters and fixed belong to name: warmup_fixed, not {ls.name}")
    if t.optimizer.lr <= 0:
        err("training.optimizer.lr", f"expected a positive learning rate, got {t.optimizer.lr}")
    if t.optimizer.weight_decay < 0:
        err("training.optimizer.weight_decay", "expected >= 0")


def _check_resources(r: Resources, key: str, err) -> None:
    if r.cpu <= 0:
        err(f"{key}.cpu", f"expected a positive number of CPUs, got {r.cpu}")
    if r.gpu < 0:
        err(f"{key}.gpu", f"expected a GPU share >= 0, got {r.gpu}")


def check(m: Manifest, where: str) -> None:
    """Everything the types cannot say; every resolved cell is built once here."""
    from harness.config.expand import resolve_cell
    from harness.data import TRAIN_SIZES
    from harness.models import MODELS
    from harness.models.init import INITS
    from harness.pruning.methods import METHODS

    def err(key: str, msg: str) -> typing.NoReturn:
        raise ManifestError(f"{where}: {key}: {msg}")

    for k, ds in m.datasets.items():
        for name in ("train_subset", "test_subset"):
            v = getattr(ds, name)
            if v is not None and v <= 0:
                err(f"datasets.{k}.{name}", f"expected a positive integer or null, got {v}")
        if not 0 <= ds.validation < (ds.train_subset or TRAIN_SIZES[ds.source]):
            err(f"datasets.{k}.validation", f"expected 0 or a number of images below the training split's size, got {ds.validation}")
        if any(s <= 0 for s in ds.std):
            err(f"datasets.{k}.std", "expected positive numbers")
        if ds.crop_padding < 0:
            err(f"datasets.{k}.crop_padding", f"expected >= 0, got {ds.crop_padding}")
    for k, mc in m.models.items():
        if mc.arch not in MODELS:
            err(f"models.{k}.arch", f"unknown model '{mc.arch}' (expected one of: {', '.join(sorted(MODELS))})")
        if not 0 < mc.width <= 4:
            err(f"models.{k}.width", f"expected a width multiplier in (0, 4], got {mc.width}")
        if mc.init is not None and mc.init not in INITS:
            err(f"models.{k}.init", f"unknown initialiser '{mc.init}' (expected one of: {', '.join(sorted(INITS))})")
    for k, mc in m.methods.items():
        if k in METHODS:
            err(f"methods.{k}", f"'{k}' is a registered method; give this variant a name of its own")
        if mc.method not in METHODS:
            err(f"methods.{k}.method", f"unknown method '{mc.method}' (expected one of: {', '.join(sorted(METHODS))})")
    known_methods = sorted({*METHODS, *m.methods})
    _check_resources(m.resources, "resources", err)
    if not m.experiments:
        err("experiments", "expected at least one experiment")
    names = set()
    bf16_at = None  # the first experiment with a cell training in bf16
    for i, e in enumerate(m.experiments):
        key = f"experiments[{i}]"
        if e.name in names:
            err(f"{key}.name", f"duplicate experiment name '{e.name}'")
        names.add(e.name)
        for axis in ("methods", "models", "datasets", "seeds"):
            if not getattr(e, axis):
                err(f"{key}.{axis}", "expected a non-empty list")
        for j, meth in enumerate(e.methods):
            if meth not in known_methods:
                err(f"{key}.methods[{j}]", f"unknown method '{meth}' (expected one of: {', '.join(known_methods)})")
        for j, mk in enumerate(e.models):
            if mk not in m.models:
                err(f"{key}.models[{j}]", f"unknown model '{mk}' (expected a key of models: {', '.join(sorted(m.models))})")
        for j, dk in enumerate(e.datasets):
            if dk not in m.datasets:
                err(f"{key}.datasets[{j}]", f"unknown dataset '{dk}' (expected a key of datasets: {', '.join(sorted(m.datasets))})")
        for j, s in enumerate(e.sparsities):
            if not 0 <= s < 1:
                err(f"{key}.sparsities[{j}]", f"expected a sparsity in [0, 1), got {s}")
        for mk, targets in e.model_sparsities.items():
            if mk not in e.models:
                err(f"{key}.model_sparsities.{mk}", f"'{mk}' is not a model of this experiment")
            for j, s in enumerate(targets):
                if not 0 <= s < 1:
                    err(f"{key}.model_sparsities.{mk}[{j}]", f"expected a sparsity in [0, 1), got {s}")
        for mk in e.model_overrides:
            if mk not in m.models:
                err(f"{key}.model_overrides.{mk}", f"unknown model key (expected one of: {', '.join(sorted(m.models))})")
        needs_target = [meth for meth in e.methods if _method(m, meth).proc.needs_sparsity]
        if needs_target and not e.sparsities and any(mk not in e.model_sparsities for mk in e.models):
            err(f"{key}.sparsities", f"expected target sparsities: method '{needs_target[0]}' trains to a target")
        for j, (a, b) in enumerate(e.layout.pairs):  # a profile's grid may leave a pair out: it is skipped
            for meth in (a, b):
                if meth not in known_methods:
                    err(f"{key}.layout.pairs[{j}]", f"unknown method '{meth}' (expected one of: {', '.join(known_methods)})")
        if e.layout.kind == "paired" and not e.layout.pairs:
            err(f"{key}.layout.pairs", "expected (base, modified) method pairs for a paired layout")
        if e.layout.dense_method is not None and e.layout.dense_method not in e.methods:
            err(f"{key}.layout.dense_method", f"'{e.layout.dense_method}' is not a method of this experiment")
        if e.resources:
            _check_resources(e.resources, f"{key}.resources", err)
        for mk in e.models:  # every resolved cell must validate
            for meth in e.methods:
                training = resolve_cell(m, e, mk, meth, where, key)[0]
                if training.precision == "bf16" and bf16_at is None:
                    bf16_at = f"{key} (model {mk}, method {meth})"
    if bf16_at is not None and BF16_DEVIATION not in {d.name for d in m.deviations}:
        err("deviations", f"{bf16_at} trains with precision bf16, which changes numerics: expected a deviation "
                          f"named '{BF16_DEVIATION}' saying so")
    for i, c in enumerate(m.expected):
        key = f"expected[{i}]"
        if c.experiment not in names:
            continue  # a profile may drop experiments; their expectations stay dormant
        for j, mk in enumerate(c.models):
            if mk not in m.models:
                err(f"{key}.models[{j}]", f"unknown model '{mk}'")
        for j, meth in enumerate(c.methods):
            if meth not in known_methods:
                err(f"{key}.methods[{j}]", f"unknown method '{meth}'")
        if not c.rounds and not c.sparsities:
            err(key, "expected rounds or sparsities to say which cells the value belongs to")
    for i, c in enumerate(m.claims):
        for meth in (c.a, *c.b):
            if meth not in known_methods:
                err(f"claims[{i}]", f"unknown method '{meth}' (expected one of: {', '.join(known_methods)})")
        if not 0 < c.max_density <= 1:
            err(f"claims[{i}].max_density", f"expected a density in (0, 1], got {c.max_density}")
        if not 0 <= c.min_density <= c.max_density:
            err(f"claims[{i}].min_density", f"expected a density in [0, max_density], got {c.min_density}")
        if c.noise.k < 0:
            err(f"claims[{i}].noise.k", f"expected >= 0, got {c.noise.k}")
        if c.kind == "compare" and not c.b:
            err(f"claims[{i}].b", "expected at least one baseline method to compare with")
        if c.kind == "fails" and (c.b or c.margin < 0):
            err(f"claims[{i}]", "a 'fails' claim names no baseline (b) and a margin >= 0 (points above chance)")
        if c.kind == "correlation":
            if not c.against:
                err(f"claims[{i}].against", "expected the metric the claim's metric correlates with")
            if not 0 <= c.min_r <= 1:
                err(f"claims[{i}].min_r", f"expected a coefficient in [0, 1], got {c.min_r}")
            if c.bootstrap < 100:
                err(f"claims[{i}].bootstrap", f"expected at least 100 resamples, got {c.bootstrap}")
        elif c.against is not None:
            err(f"claims[{i}].against", f"only a 'correlation' claim has a second metric (kind is '{c.kind}')")
        if c.margin < 0:
            err(f"claims[{i}].margin", f"expected points >= 0, got {c.margin}")


def _method(m: Manifest, key: str):
    from harness.config.expand import method_parts

    return method_parts(m, key)[0]
