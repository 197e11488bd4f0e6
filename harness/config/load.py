"""Loading a manifest: YAML -> profile -> strict typed build (:mod:`.build`) -> semantic checks, every resolved cell
included (:mod:`.resolve`); and reading specs back from disk.

Every mistake is a :class:`ManifestError` whose text is one line naming the file, the key path
and what was expected. Torch-free: the dataset registry, the model and pruning catalogs and the procedure
registry say what exists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import typing
from pathlib import Path


from harness.config.build import build
from harness.config.files import read_yaml
from harness.config.overlay import add_methods, apply_overlay
from harness.config.plugins import load_plugins
from harness.config.profiles import apply_profile, profile_names
from harness.config.resolve import method_parts, resolve_cell
from harness.config.schema import Manifest, ManifestError, Resources
from harness.config.specs import DenseSpec, RunSpec
from harness.data.sources import SOURCES
from harness.models.catalog import ARCHS, INITS
from harness.pruning.catalog import ALLOCATIONS, SCORES
from harness.pruning.methods import METHODS, PROCEDURES

__all__ = ["load", "load_all", "read_yaml", "check", "run_from_dict", "dense_from_dict"]

BF16_DEVIATION = "bf16_autocast"  # the deviation a manifest training in bf16 must list


def load(path: str | Path, profile: str = "full") -> Manifest:
    """Load (an overlay: onto the manifest it extends), import its plugins, profile-resolve and validate a manifest;
    raise ManifestError on any mistake."""
    raw, text = read_yaml(path)
    overlay, add = "", {}
    if "extends" in raw:
        raw, text, overlay, add = apply_overlay(raw, text, Path(path))
    where = str(path) if profile == "full" else f"{path} [profile {profile}]"
    plugins = raw.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(x, str) for x in plugins):
        raise ManifestError(f"{where}: plugins: expected a list of plugin names or module paths, got {plugins!r}")
    load_plugins(plugins, f"{where}: plugins")
    known = {e.get("name") for e in raw.get("experiments") or [] if isinstance(e, dict)}
    merged = add_methods(apply_profile(raw, profile, str(path)), add, where, known)
    m = build(Manifest, merged, where, "")
    check(m, where)
    digest = hashlib.sha256((text + "\0" + profile).encode()).hexdigest()[:16]
    own = {e.get("name"): e.get("title") for e in raw.get("experiments") or [] if isinstance(e, dict)}
    exps = tuple(dataclasses.replace(e, paper_title=own.get(e.name)) if own.get(e.name) not in (None, e.title) else e
                 for e in m.experiments)
    return dataclasses.replace(m, experiments=exps, profile=profile, path=str(Path(path).resolve()), digest=digest,
                               overlay=overlay)


def load_all(path: str | Path, profile: str | None = None) -> list[Manifest]:
    """The manifest under every profile (``full`` first), or under ``profile`` only."""
    raw, text = read_yaml(path)
    if "extends" in raw:
        raw = apply_overlay(raw, text, Path(path))[0]
    names = [profile] if profile else ["full", *profile_names(raw)]
    return [load(path, name) for name in names]


# --------------------------------------------------------------------------- semantic checks

BF16_DEVIATION = "bf16_autocast"  # the deviation a manifest training in bf16 must list


def _check_resources(r: Resources, key: str, err) -> None:
    if r.cpu <= 0:
        err(f"{key}.cpu", f"expected a positive number of CPUs, got {r.cpu}")
    if r.gpu < 0:
        err(f"{key}.gpu", f"expected a GPU share >= 0, got {r.gpu}")


def check(m: Manifest, where: str) -> None:
    """Everything the types cannot say; every resolved cell is built once here."""

    def err(key: str, msg: str) -> typing.NoReturn:
        raise ManifestError(f"{where}: {key}: {msg}")

    for k, ds in m.datasets.items():
        if ds.source not in SOURCES:
            err(f"datasets.{k}.source", f"unknown dataset '{ds.source}' (expected one of: {', '.join(sorted(SOURCES))})")
        for name in ("train_subset", "test_subset"):
            v = getattr(ds, name)
            if v is not None and v <= 0:
                err(f"datasets.{k}.{name}", f"expected a positive integer or null, got {v}")
        if not 0 <= ds.validation < (ds.train_subset or SOURCES[ds.source].train_size):
            err(f"datasets.{k}.validation", f"expected 0 or a number of images below the training split's size, got {ds.validation}")
        if any(s <= 0 for s in ds.std):
            err(f"datasets.{k}.std", "expected positive numbers")
        if ds.crop_padding < 0:
            err(f"datasets.{k}.crop_padding", f"expected >= 0, got {ds.crop_padding}")
        src = SOURCES[ds.source]
        if src.holding == "memory" and ds.augment != "pad_crop_flip":
            err(f"datasets.{k}.augment", f"'{ds.augment}' needs a streamed dataset; {ds.source} is held in memory at "
                                         f"{src.image_size} px (expected pad_crop_flip)")
        if src.holding == "memory" and ds.image_size not in (0, src.image_size):
            err(f"datasets.{k}.image_size", f"{ds.source} is held in memory at {src.image_size} px (expected 0 or "
                                            f"{src.image_size})")
        if ds.image_size < 0 or ds.eval_resize < 0:
            err(f"datasets.{k}.image_size", "expected sizes >= 0 (0: the dataset's own)")
    for k, mc in m.models.items():
        if mc.arch not in ARCHS:
            err(f"models.{k}.arch", f"unknown model '{mc.arch}' (expected one of: {', '.join(sorted(ARCHS))})")
        if not 0 < mc.width <= 4:
            err(f"models.{k}.width", f"expected a width multiplier in (0, 4], got {mc.width}")
        if mc.init is not None and mc.init not in INITS:
            err(f"models.{k}.init", f"unknown initialiser '{mc.init}' (expected one of: {', '.join(sorted(INITS))})")
    for k, mc in m.methods.items():
        if k in METHODS:
            err(f"methods.{k}", f"'{k}' is a registered method; give this variant a name of its own")
        composed = (mc.procedure, mc.score, mc.allocation)
        if mc.method is not None:
            if any(v is not None for v in composed):
                err(f"methods.{k}", "give either method (a registered one, with params) or procedure, score and "
                                    "allocation (a new one), not both")
            if mc.method not in METHODS:
                err(f"methods.{k}.method", f"unknown method '{mc.method}' (expected one of: {', '.join(sorted(METHODS))})")
            continue
        for field_, value, known in (("procedure", mc.procedure, PROCEDURES), ("score", mc.score, SCORES),
                                     ("allocation", mc.allocation, ALLOCATIONS)):
            if value is None:
                err(f"methods.{k}.{field_}", "missing (a method is a registered method, or a procedure, a score and "
                                             "an allocation)")
            if value not in known:
                err(f"methods.{k}.{field_}", f"unknown {field_} '{value}' (expected one of: {', '.join(sorted(known))})")
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
        needs_target = [meth for meth in e.methods if PROCEDURES[_method(m, meth).procedure].needs_sparsity]
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
    return method_parts(m, key)[0]


def run_from_dict(data: dict) -> RunSpec:
    """A spec written with ``dataclasses.asdict`` (``spec.json``, a Ray trial's config) read back, typed."""
    data = dict(data)
    params = build(PROCEDURES[data["procedure"]].Params, data.pop("params"), "<spec>", "params")
    spec = build(RunSpec, {**data, "params": {}}, "<spec>", "")
    return dataclasses.replace(spec, params=params)


def dense_from_dict(data: dict) -> DenseSpec:
    return build(DenseSpec, data, "<spec>", "")
