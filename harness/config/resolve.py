"""Resolving one grid cell's settings: manifest defaults <- experiment ``overrides`` <- ``model_overrides`` <- the
method's own parameters, built into typed values and checked (one-line errors). Used by validation (every cell of
every profile) and by grid expansion."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from harness.config.build import build, check_duration, check_training
from harness.config.profiles import deep_merge
from harness.config.schema import EvalConfig, Experiment, Manifest, ManifestError, PruningConfig, TrainingConfig
from harness.pruning.methods import METHODS, PROCEDURES, Method

__all__ = ["method_parts", "resolve_cell"]


def method_parts(m: Manifest, key: str):
    """(registered method, its parameter overrides) for a method key of the manifest; a manifest-local method composed
    of a procedure, score and allocation is a new Method."""
    if key in m.methods:
        mc = m.methods[key]
        if mc.method is None:
            return Method(mc.procedure, mc.score, mc.allocation, mc.description or ""), dict(mc.params)
        base = METHODS[mc.method]
        return base, deep_merge(dict(base.params), dict(mc.params))
    base = METHODS[key]
    return base, dict(base.params)


def resolve_cell(m: Manifest, e: Experiment, model_key: str, method_key: str, where: str,
                 key: str) -> tuple[TrainingConfig, EvalConfig, str, Any]:
    """The training, evaluation, prunable set and procedure parameters of one cell."""
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
