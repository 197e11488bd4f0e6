"""Optimizers, LR schedules, the step loop with pruning hooks, and evaluation.

The loop counts optimizer steps (LAMP's unit) and cycles epochs of the device-resident data
until the budget is spent. Pruning procedures plug in through :class:`StepHooks`:

* ``before_forward(step)``: e.g. DPF writes the masked copy into the weights;
* ``before_optimizer_step(step)``: e.g. DPF restores the dense weights (straight-through);
* ``after_optimizer_step(step)``: e.g. iterative pruning re-applies its masks, gradual pruning
  updates the mask on schedule.

Per-step values are accumulated on the device; the loop syncs with the host once at the end.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from harness.data import DeviceData
from harness.manifest import LRScheduleConfig, OptimizerConfig, duration_steps


class StepHooks:
    """No-op hooks; procedures override what they need."""

    def before_forward(self, step: int) -> None:  # noqa: D102
        pass

    def before_optimizer_step(self, step: int) -> None:  # noqa: D102
        pass

    def after_optimizer_step(self, step: int) -> None:  # noqa: D102
        pass


def make_optimizer(cfg: OptimizerConfig, params) -> torch.optim.Optimizer:
    """Every hyperparameter comes from the manifest; nothing relies on a library default."""
    if cfg.name in ("adamw", "adam"):
        cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
        return cls(params, lr=cfg.lr, betas=cfg.betas or (0.9, 0.999), eps=cfg.eps or 1e-8,
                   weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum or 0.0,
                           nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg: LRScheduleConfig, steps_per_epoch: int):
    if cfg.name == "constant":
        return None
    milestones = [duration_steps(m, steps_per_epoch) for m in cfg.milestones]
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=cfg.gamma)


def stage_seed(seed: int, stage: str) -> int:
    """A stable 63-bit seed for one stage of a run (pre-training, round k, ...)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}/{stage}".encode()).digest()[:8], "big") >> 1


def autocast(device: torch.device, precision: str):
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class TrainResult:
    steps: int
    train_loss: float  # mean over the stage's steps
    train_acc: float  # on the (augmented) batches seen during training


def train(model: nn.Module, data: DeviceData, *, steps: int, optimizer: torch.optim.Optimizer,
          scheduler, batch_size: int, drop_last: bool, seed: int, hooks: StepHooks | None = None,
          precision: str = "fp32") -> TrainResult:
    """Run ``steps`` optimizer steps; the data order and augmentation are drawn from ``seed``."""
    hooks = hooks or StepHooks()
    device = data.device
    gen = torch.Generator(device=device).manual_seed(seed)
    torch.manual_seed(seed)  # dropout and anything else drawing from the global RNG
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    step = 0
    while step < steps:
        for x, y in data.train_batches(gen, batch_size, drop_last):
            if step >= steps:
                break
            hooks.before_forward(step)
            with autocast(device, precision):
                out = model(x)
                loss = F.cross_entropy(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            hooks.before_optimizer_step(step)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            hooks.after_optimizer_step(step)
            loss_sum += loss.detach().float()
            correct += (out.detach().argmax(1) == y).sum()
            seen += y.numel()
            step += 1
    return TrainResult(steps, float(loss_sum) / max(steps, 1), float(correct) / max(seen, 1))


@torch.no_grad()
def evaluate(model: nn.Module, batches, precision: str = "fp32") -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over ``batches`` in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum = None
    correct = None
    n = 0
    for x, y in batches:
        with autocast(x.device, precision):
            out = model(x).float()
        l = F.cross_entropy(out, y, reduction="sum")
        c = (out.argmax(1) == y).sum()
        loss_sum = l if loss_sum is None else loss_sum + l
        correct = c if correct is None else correct + c
        n += y.numel()
    model.train(was_training)
    if n == 0:
        return float("nan"), float("nan")
    return float(correct) / n, float(loss_sum) / n
