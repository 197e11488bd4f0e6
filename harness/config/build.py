"""The one strict converter from plain data (YAML, JSON) to the schema's dataclasses, and the checks of a training
that every cell needs. Every mistake is a :class:`ManifestError` whose text is one line naming the file, the key path
and what was expected. Also how specs are read back from disk."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

from harness.config.schema import NOT_YAML, ManifestError, PruningConfig, TrainingConfig
from harness.pruning.methods import PROCEDURES
from harness.units import is_duration

__all__ = ["build", "check_duration", "check_training", "type_name"]


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
        for old, new in getattr(tp, "RENAMED", {}).items():  # keys renamed since (ids hash the old name)
            if old in value:
                if new in value:
                    raise ManifestError(f"{where}: {key + '.' if key else ''}{old}: renamed to {new}; give only {new}")
                value[new] = value.pop(old)
        extra = {}
        if tp is PruningConfig:  # pruning.<procedure>: raw sections, typed per cell
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
