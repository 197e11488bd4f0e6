"""The extension API: a score, an allocation, a sparsity schedule, a procedure or a method defined in your own package
and registered without touching harness/ (README "Bring your own method" has a worked example).

API version 1. What a plugin may rely on, and what stays stable within a major version:

* these functions: :func:`register_score`, :func:`register_allocation`, :func:`register_schedule`,
  :func:`register_procedure`, :func:`register_method`, and :data:`API_VERSION` (check it with :func:`require`);
* a score's inputs, :class:`harness.pruning.scores.ScoreInputs` (``model``, ``params`` and ``masks`` by name in
  forward order, ``batches()``, ``loss``, ``generator``, ``options``); it returns one tensor per entry of ``params``,
  each of that tensor's shape, higher meaning keep;
* an allocation's inputs, :class:`harness.pruning.allocation.Layer` (``name``, ``weight``, ``mask``: the eligible
  entries, ``original_numel``), the scores, and the rate (fraction of the eligible entries to remove); it returns
  one count of survivors per layer, each within ``[0, eligible entries of that layer]``;
* a schedule: ``density(t)`` (the target density at the 0-based step t) and ``is_update(t)`` (whether the mask is
  recomputed before the forward pass of step t), built by a factory from the ``gradual`` procedure's settings;
* a procedure: :class:`harness.pruning.methods.base.Procedure` (``name``, ``Params``: a frozen dataclass of typed
  parameters, validated like the built-in ones; ``axis``; ``planned_rows``, ``images``, ``run``), driving the
  :class:`harness.stage.Stage` handle (``begin_dense``/``begin_fresh``, ``decide`` with the steps of
  :mod:`harness.pruning.steps`, ``train``/``train_stage``, ``units``, ``row``/``evaluated_row``/``finish``).

Registration mistakes (a name already taken, an input that does not exist) raise at once, in one line naming the
plugin; at run time a plugin's score or allocation that raises or returns a wrong shape fails its run with one line
naming the plugin and what it broke (:class:`PluginError`), and the rest of the grid goes on.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import torch

from harness.pruning import allocation as _allocation
from harness.pruning import catalog as _catalog
from harness.pruning import schedules as _schedules
from harness.pruning import scores as _scores
from harness.pruning.methods import METHODS, PROCEDURES, Method, Procedure

__all__ = ["API_VERSION", "PluginError", "require", "register_score", "register_allocation", "register_schedule",
           "register_procedure", "register_method", "origin"]

API_VERSION = 1
_ORIGIN: dict[tuple[str, str], str] = {}  # (kind, name) -> the plugin that registered it


class PluginError(RuntimeError):
    """A plugin broke its contract: one line naming the plugin, the entry and what went wrong."""


def _caller() -> str:
    """The top-level package of the module that called the register function (the plugin's name in messages)."""
    frame = sys._getframe(2)
    return frame.f_globals.get("__name__", "?").split(".")[0]


def origin(kind: str, name: str) -> str | None:
    """The plugin that registered ``name`` of ``kind`` (score, allocation, schedule, procedure, method), or None."""
    return _ORIGIN.get((kind, name))


def require(major: int) -> None:
    """Fail at import with one line when this harness speaks another major API version than the plugin needs."""
    if major != API_VERSION:
        raise PluginError(f"plugin {_caller()} needs prunebench plugin API {major}; this harness has {API_VERSION}")


def _claim(kind: str, name: str, taken: bool, plugin: str) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise PluginError(f"plugin {plugin}: {kind} name {name!r} must be an identifier")
    if taken and _ORIGIN.get((kind, name)) != plugin:
        raise PluginError(f"plugin {plugin}: {kind} '{name}' is already registered"
                          + (f" by plugin {_ORIGIN[(kind, name)]}" if (kind, name) in _ORIGIN else " (built in)"))
    _ORIGIN[(kind, name)] = plugin


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _checked_scores(plugin: str, name: str, fn: Callable[[Any], list], per_layer: bool):
    """``fn`` with its output checked: one tensor per prunable tensor, of that tensor's shape, all finite."""

    def check(out, params: dict) -> list[torch.Tensor]:
        out = list(out) if not isinstance(out, torch.Tensor) else None
        if out is None or len(out) != len(params):
            raise PluginError(f"plugin {plugin}: score '{name}' returned "
                              f"{'a single tensor' if out is None else f'{len(out)} tensors'} for {len(params)} "
                              f"prunable tensors (expected one per tensor)")
        for (pname, p), s in zip(params.items(), out):
            if not isinstance(s, torch.Tensor) or tuple(s.shape) != tuple(p.shape):
                shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
                raise PluginError(f"plugin {plugin}: score '{name}' returned {shape} for {pname} of shape "
                                  f"{tuple(p.shape)}")
            if not bool(torch.isfinite(s).all()):
                raise PluginError(f"plugin {plugin}: score '{name}' returned non-finite values for {pname}")
        return out

    if per_layer:
        def one(w: torch.Tensor) -> torch.Tensor:
            s = _call(plugin, f"score '{name}'", fn, w)
            check([s], {"the layer": w})
            return s
        return one

    def compute(inputs) -> list[torch.Tensor]:
        return check(_call(plugin, f"score '{name}'", fn, inputs), inputs.params)

    return compute


def _call(plugin: str, what: str, fn: Callable, *args):
    """``fn(*args)``, anything it raises turned into one line naming the plugin and the entry."""
    try:
        return fn(*args)
    except PluginError:
        raise
    except Exception as e:  # noqa: BLE001
        raise PluginError(f"plugin {plugin}: {what} raised {_first_line(e)}") from e


def register_score(name: str, fn: Callable, *, needs: set[str] | frozenset[str], description: str = "") -> None:
    """A score named ``name``. ``needs`` says what it reads: ``{"weights"}`` alone makes ``fn`` a function of one
    layer's effective weight tensor (masked entries 0) returning a tensor of its shape; any other need (``model``,
    ``batches``, ``gradients``, ``hessian``, ``activations``, ``rng``) makes ``fn`` take a
    :class:`~harness.pruning.scores.ScoreInputs` and return one tensor per prunable tensor."""
    plugin = _caller()
    _claim("score", name, name in _catalog.SCORES, plugin)
    unknown = set(needs) - _catalog.NEEDS
    if unknown or not needs:
        raise PluginError(f"plugin {plugin}: score '{name}' asks for {sorted(unknown) or 'nothing'}, which does not "
                          f"exist (expected some of: {', '.join(sorted(_catalog.NEEDS))})")
    weights_only = frozenset(needs) == _catalog.WEIGHTS_ONLY
    _catalog.SCORES.pop(name, None)
    _catalog.add_score(_catalog.ScoreInfo(name, frozenset(needs), description))
    checked = _checked_scores(plugin, name, fn, weights_only)
    _scores.register(_scores.Score(name, per_layer=checked) if weights_only else _scores.Score(name, compute=checked))


def register_allocation(name: str, fn: Callable, *, description: str = "") -> None:
    """An allocation: ``fn(layers, scores, rate) -> list[int]``, the survivors of each layer (see the module
    docstring); the shared keep-top selection picks which entries survive by the score."""
    plugin = _caller()
    _claim("allocation", name, name in _catalog.ALLOCATIONS, plugin)

    def checked(layers, scores, rate):
        counts = list(_call(plugin, f"allocation '{name}'", fn, layers, scores, rate))
        if len(counts) != len(layers):
            raise PluginError(f"plugin {plugin}: allocation '{name}' returned {len(counts)} counts for "
                              f"{len(layers)} layers")
        for layer, k in zip(layers, counts):
            eligible = int(layer.mask.sum())
            if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= eligible:
                raise PluginError(f"plugin {plugin}: allocation '{name}' kept {k!r} entries of {layer.name}, "
                                  f"expected an integer in [0, {eligible}]")
        return counts

    _catalog.ALLOCATIONS.pop(name, None)
    _catalog.add_allocation(name, description)
    _allocation.ALLOCATIONS[name] = checked


def register_schedule(name: str, factory: Callable, *, description: str = "") -> None:
    """A sparsity schedule for the ``gradual`` procedure (``pruning.gradual.schedule: <name>``):
    ``factory(final_sparsity, start, end, every, initial_sparsity, freeze_after_end)`` (steps) returns an object with
    ``density(t)`` and ``is_update(t)``."""
    plugin = _caller()
    _claim("schedule", name, name in _schedules.SCHEDULES, plugin)
    _schedules.SCHEDULES[name] = _schedules.ScheduleInfo(factory, description)


def register_procedure(procedure: Procedure) -> None:
    """A procedure: a :class:`~harness.pruning.methods.base.Procedure` instance whose ``Params`` is a frozen
    dataclass (the manifest's ``pruning.<name>`` section is built into it, strictly, with one-line errors)."""
    plugin = _caller()
    name = getattr(procedure, "name", None)
    _claim("procedure", name, name in PROCEDURES, plugin)
    if not isinstance(procedure, Procedure):
        raise PluginError(f"plugin {plugin}: procedure '{name}' is not a harness.pruning.methods.base.Procedure")
    params = getattr(procedure, "Params", None)
    if not (isinstance(params, type) and dataclasses.is_dataclass(params)
            and params.__dataclass_params__.frozen):  # type: ignore[attr-defined]
        raise PluginError(f"plugin {plugin}: procedure '{name}': Params must be a frozen dataclass")
    if getattr(procedure, "axis", None) not in ("round", "epoch"):
        raise PluginError(f"plugin {plugin}: procedure '{name}': axis must be 'round' or 'epoch'")
    PROCEDURES[name] = procedure


def register_method(name: str, *, procedure: str, score: str, allocation: str, description: str = "",
                    params: dict | None = None) -> None:
    """A method (a name in the papers' vocabulary): a registered procedure with a score, an allocation and
    parameter overrides; a manifest lists it in an experiment's ``methods``."""
    plugin = _caller()
    _claim("method", name, name in METHODS, plugin)
    for kind, value, known in (("procedure", procedure, PROCEDURES), ("score", score, _catalog.SCORES),
                               ("allocation", allocation, _catalog.ALLOCATIONS)):
        if value not in known:
            raise PluginError(f"plugin {plugin}: method '{name}' uses {kind} '{value}', which is not registered "
                              f"(expected one of: {', '.join(sorted(known))})")
    METHODS[name] = Method(procedure, score, allocation, description, params=dict(params or {}))
