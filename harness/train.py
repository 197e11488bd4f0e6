"""Optimizers, LR schedules, the step loop with pruning hooks, and evaluation.

The loop counts optimizer steps (LAMP's unit) and cycles epochs of the device-resident data
until the budget is spent. Pruning procedures plug in through :class:`StepHooks`:

* ``before_forward(step)``: e.g. DPF writes the masked copy into the weights;
* ``before_optimizer_step(step)``: e.g. DPF restores the dense weights (straight-through);
* ``after_optimizer_step(step)``: e.g. iterative pruning re-applies its masks, gradual pruning
  updates the mask on schedule;
* ``after_epoch(epoch, state)``: at the end of every full pass over the data (epochs count
  from 1): evaluation and checkpoints.

A stage can be resumed mid-way from a :class:`TrainState` taken at an epoch end: the data
order's generator state, the global RNG state and the loop counters are part of it, so a resumed
stage continues bit for bit as if it had never stopped.

Per-step values stay on the device; the loop looks at the host only every ``CHECK_EVERY`` steps
and at epoch ends, to stop a diverged run (non-finite loss or weights) at once.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from harness.config.schema import LRScheduleConfig, OptimizerConfig
from harness.data import DeviceData
from harness.units import duration_steps

CHECK_EVERY = 25  # steps between divergence checks (one host sync each)


class Diverged(RuntimeError):
    """The loss or the weights became non-finite at optimizer step ``step`` (0-based)."""

    def __init__(self, step: int, what: str):
        super().__init__(f"{what} became non-finite at step {step}")
        self.step, self.what = step, what


class StepHooks:
    """No-op hooks; procedures override what they need."""

    def before_forward(self, step: int) -> None:  # noqa: D102
        pass

    def before_optimizer_step(self, step: int) -> None:  # noqa: D102
        pass

    def after_optimizer_step(self, step: int) -> None:  # noqa: D102
        pass

    def after_epoch(self, epoch: int, state: "TrainState") -> None:  # noqa: D102
        pass


class HookChain(StepHooks):
    """Several hooks called in order."""

    def __init__(self, *hooks: StepHooks):
        self.hooks = [h for h in hooks if h is not None]

    def before_forward(self, step):
        for h in self.hooks:
            h.before_forward(step)

    def before_optimizer_step(self, step):
        for h in self.hooks:
            h.before_optimizer_step(step)

    def after_optimizer_step(self, step):
        for h in self.hooks:
            h.after_optimizer_step(step)

    def after_epoch(self, epoch, state):
        for h in self.hooks:
            h.after_epoch(epoch, state)


def make_optimizer(cfg: OptimizerConfig, params) -> torch.optim.Optimizer:
    """Every hyperparameter comes from the manifest; nothing relies on a library default."""
    if cfg.name in ("adamw", "adam"):
        cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
        return cls(params, lr=cfg.lr, betas=cfg.betas or (0.9, 0.999), eps=cfg.eps or 1e-8,
                   weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum or 0.0,
                           nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg: LRScheduleConfig, steps_per_epoch: int):
    """Stepped once per optimizer step; milestones are durations converted to steps."""
    if cfg.name == "constant":
        return None
    if cfg.name == "warmup_fixed":
        base = opt.param_groups[0]["lr"]
        if base <= 0:
            raise ValueError("warmup_fixed needs a positive optimizer lr (the base its absolute LRs are divided by)")
        fn = warmup_fixed_lr(cfg, steps_per_epoch)
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda i: fn(i) / base)
    milestones = [duration_steps(m, steps_per_epoch) for m in cfg.milestones]
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=cfg.gamma)


def warmup_fixed_lr(cfg: LRScheduleConfig, steps_per_epoch: int):
    """The absolute LR of 0-based optimizer step ``i`` under a ``warmup_fixed`` schedule (ap.md 3)."""
    fixed = sorted((int(e), float(lr)) for e, lr in cfg.fixed)

    def lr(i: int) -> float:
        epoch = i // steps_per_epoch
        out = cfg.warmup_per_iter * min(i, cfg.warmup_iters)
        for e, value in fixed:
            if epoch >= e:
                out = value
        return out

    return lr


def stage_seed(seed: int, stage: str) -> int:
    """A stable 63-bit seed for one stage of a run (pre-training, round k, ...)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{stage}".encode()).digest()[:8], "big") >> 1


def autocast(device: torch.device, precision: str):
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class TrainState:
    """Where a stage stands at an epoch end; enough to continue it bit for bit."""

    step: int = 0
    epoch: int = 0
    generator: torch.Tensor | None = None  # data order / augmentation generator state
    rng: torch.Tensor | None = None  # global CPU RNG state (dropout and friends)
    cuda_rng: torch.Tensor | None = None
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainState":
        return cls(**d)


@dataclass
class TrainResult:
    steps: int
    train_loss: float  # mean over the stage's steps
    train_acc: float  # on the (augmented) batches seen during training


def _check_finite(model: nn.Module, loss_bad: torch.Tensor, first_bad: torch.Tensor, step: int) -> None:
    if bool(loss_bad):
        raise Diverged(int(first_bad), "the training loss")
    norms = torch._foreach_norm([p.detach() for p in model.parameters()])
    if not bool(torch.isfinite(torch.stack(norms)).all()):
        raise Diverged(step, "the weights")


def train(model: nn.Module, data: DeviceData, *, steps: int, optimizer: torch.optim.Optimizer,
          scheduler, batch_size: int, drop_last: bool, seed: int, hooks: StepHooks | None = None,
          precision: str = "fp32", state: TrainState | None = None) -> TrainResult:
    """Run optimizer steps until ``steps`` in total; the data order and augmentation are drawn
    from ``seed``. ``state`` (from an ``after_epoch`` hook) resumes a stage where it stood."""
    hooks = hooks or StepHooks()
    device = data.device
    gen = torch.Generator(device=device).manual_seed(seed)
    torch.manual_seed(seed)  # dropout and anything else drawing from the global RNG
    st = state or TrainState()
    if state is not None:
        gen.set_state(state.generator)
        torch.set_rng_state(state.rng)
        if state.cuda_rng is not None and device.type == "cuda":
            torch.cuda.set_rng_state(state.cuda_rng, device)
    model.train()
    loss_sum = torch.tensor(st.loss_sum, device=device)
    correct = torch.tensor(st.correct, device=device, dtype=torch.long)
    loss_bad = torch.zeros((), device=device, dtype=torch.bool)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    seen, step, epoch = st.seen, st.step, st.epoch
    while step < steps:
        finished_epoch = True
        for x, y in data.train_batches(gen, batch_size, drop_last):
            if step >= steps:
                finished_epoch = False
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
            detached = loss.detach().float()
            bad = ~torch.isfinite(detached)
            first_bad = torch.where(bad & ~loss_bad, torch.full_like(first_bad, step), first_bad)
            loss_bad |= bad
            loss_sum += detached
            correct += (out.detach().argmax(1) == y).sum()
            seen += y.numel()
            step += 1
            if step % CHECK_EVERY == 0:
                _check_finite(model, loss_bad, first_bad, step - 1)
        if finished_epoch:
            epoch += 1
            _check_finite(model, loss_bad, first_bad, step - 1)
            snapshot = TrainState(step=step, epoch=epoch, generator=gen.get_state(), rng=torch.get_rng_state(),
                                  cuda_rng=torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                                  loss_sum=float(loss_sum), correct=int(correct), seen=seen)
            hooks.after_epoch(epoch, snapshot)
            model.train()
    _check_finite(model, loss_bad, first_bad, max(step - 1, 0))
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
