"""Plumbing shared by the lockstep tests: tiny data, tiny models, and the exact batch stream the
project's :func:`harness.train.train` draws, so a transcription of a reference loop can be fed the
same batches in the same order as the project's run.

The transcriptions themselves (the other modules of this package) import nothing from
``harness``: they are written from the reference code, rule by rule, each rule citing its file and
line there. Only the tests import both sides.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from harness.data.device import DeviceData
from harness.models.build import build_model
from harness.pruning import pai
from harness.pruning.steps import ChooseAtInit
from harness.train import HookChain, StepHooks, train

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def tiny_data(n: int = 64, n_test: int = 32, seed: int = 0, classes: int = 10) -> DeviceData:
    """Random uint8 images (3x32x32) and labels on the CPU, CIFAR's normalisation and augmentation."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n + n_test, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, classes, (n + n_test,), generator=g)
    return DeviceData(x[:n], y[:n], x[n:], y[n:], MEAN, STD, 4, "zeros", True)


def tiny_resnet20(seed: int = 0, width: float = 0.25, init: str | None = None, classes: int = 10) -> nn.Module:
    """The project's ResNet-20 (option B) at ``width``, initialised from ``seed``."""
    torch.manual_seed(seed)
    if init is None:
        return build_model("resnet20_cifar_optb", classes, width)
    return build_model("resnet20_cifar_optb", classes, width, init)


def batch_stream(data: DeviceData, seed: int, batch_size: int, drop_last: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches :func:`harness.train.train` draws with ``seed``: epoch after epoch from one
    generator seeded with ``seed`` (augmentation, then the shuffle)."""
    gen = torch.Generator(device=data.device).manual_seed(seed)
    while True:
        yield from data.train_batches(gen, batch_size, drop_last)


def clone_model(model: nn.Module) -> nn.Module:
    """An independent copy with the same parameters and buffers (for the reference side)."""
    import copy

    return copy.deepcopy(model)


def choose_at_init(spec, model: nn.Module, masks, data: DeviceData | None, gen: torch.Generator) -> dict:
    """The ``at_init`` procedure's mask decision for a spec-like value (``score``, ``allocation``, ``params``,
    ``target_sparsity``, ``training.batch_size`` / ``drop_last``; ``training`` may be None for data-free scores):
    :func:`harness.pruning.pai.choose` on ``masks``, what the stage runner does for it."""
    t = spec.training
    choice = ChooseAtInit(spec.params, spec.score, spec.allocation, density=1.0 - (spec.target_sparsity or 0.0))
    return pai.choose(choice, model, masks, data, gen, t.batch_size if t else 1, t.drop_last if t else True)


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every parameter and buffer, by name."""
    out = {n: p.detach().clone() for n, p in model.named_parameters()}
    out.update({n: b.detach().clone() for n, b in model.named_buffers()})
    return out


@dataclass
class TrainCall:
    """One call of :func:`harness.train.train` inside a procedure: its seed, length, optimizer settings, the state it
    started from, the masks its update held at the start (None without masks), and the state after every step."""

    seed: int
    steps: int
    opt: dict
    init: dict[str, torch.Tensor]
    masks: list[torch.Tensor] | None
    states: list[dict[str, torch.Tensor]] = field(default_factory=list)

    @property
    def lr(self) -> float:
        return self.opt["lr"]

    @property
    def momentum(self) -> float:
        return self.opt["momentum"]


def _masks_of(hooks) -> list[torch.Tensor] | None:
    for h in (hooks.hooks if isinstance(hooks, HookChain) else [hooks]):
        masks = getattr(h, "masks", None)
        if masks is not None:
            return [m.clone() for _, m in masks]
    return None


def record_trainings(mp, data: DeviceData) -> list[TrainCall]:
    """Make the stage runner (:mod:`harness.stage`, where every procedure's trainings run) train on ``data`` and
    record every train() call it makes, in order (the dense pre-training first when it is not cached)."""
    import harness.stage as stage_module

    calls: list[TrainCall] = []

    class Rec(StepHooks):
        def __init__(self, model, call):
            self.model, self.call = model, call

        def after_optimizer_step(self, step):
            self.call.states.append(full_state(self.model))

    def recording_train(model, data_, *, steps, optimizer, seed, hooks=None, **kw):
        g = optimizer.param_groups[0]
        opt = {k: g[k] for k in ("lr", "momentum", "betas", "eps", "weight_decay") if k in g} | {"type": type(optimizer)}
        call = TrainCall(seed, steps, opt, full_state(model), _masks_of(hooks))
        calls.append(call)
        return train(model, data_, steps=steps, optimizer=optimizer, seed=seed,
                     hooks=HookChain(hooks, Rec(model, call)), **kw)

    mp.setattr(stage_module, "load_data", lambda ds, ctx: data)
    mp.setattr(stage_module, "train", recording_train)
    return calls
