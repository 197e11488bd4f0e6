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
and at epoch ends, to stop a diverged run (non-finite loss or weights) at once. This is always on
(it changes nothing numerically): no ``.item()``, ``float()`` or ``bool()`` of a device tensor inside
the step loop between checks.

The GPU fast path (:class:`FastPath`, the manifest's ``training.channels_last`` and
``training.compile``) is read from the active :func:`fast_path` context, which
:func:`harness.experiment.run` and :func:`harness.experiment.train_dense` open from the spec, so
every procedure's training and evaluation take it without passing it along. ``precision: bf16``
autocasts the forward pass and the loss to bfloat16 on CUDA and on the CPU.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from harness.config.schema import LRScheduleConfig, OptimizerConfig
from harness.data.device import DeviceData
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
    """Stepped once per optimizer step; milestones are durations converted to steps.

    ``multistep`` with epoch milestones equals a MultiStepLR stepped once per epoch (INCHEON's DPF
    main.py:150, ramanujan-on-pai main.py:455): a milestone ``m ep`` becomes step ``m * steps_per_epoch``
    (the partial last batch counts as a step), so step ``i`` of 0-based epoch ``i // steps_per_epoch``
    uses ``lr * gamma ** #(milestones <= that epoch)``, the same chained products (tests/reference/
    test_lr_reference.py). ``warmup_fixed`` sets the absolute LR of :func:`warmup_fixed_lr` at every step
    (no division by the optimizer's base LR, so each value is the reference's float exactly)."""
    if cfg.name == "constant":
        return None
    if cfg.name == "warmup_fixed":
        return AbsoluteLR(opt, warmup_fixed_lr(cfg, steps_per_epoch))
    milestones = [duration_steps(m, steps_per_epoch) for m in cfg.milestones]
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=cfg.gamma)


class AbsoluteLR(torch.optim.lr_scheduler.LRScheduler):
    """Every parameter group trains optimizer step ``i`` (0-based, the scheduler stepped once after each optimizer
    step) at ``fn(i)``, an absolute LR: no base LR is multiplied or divided, so the value is ``fn``'s exactly."""

    def __init__(self, optimizer: torch.optim.Optimizer, fn):
        self.fn = fn
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        return [self.fn(self.last_epoch) for _ in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "fn")}


def warmup_fixed_lr(cfg: LRScheduleConfig, steps_per_epoch: int):
    """The absolute LR of 0-based optimizer step ``i`` under a ``warmup_fixed`` schedule (ap.md 3).

    AP's released code (Martin1937/Activate-While-Pruning resnet_20.py:143-145, 171, 194: the count and the LR start
    at 0 at every training; :239-253, before every step): the 1-based iteration count goes up by one, the running LR
    gets ``warmup_per_iter`` added while that count is ``<= warmup_iters``, then from 0-based epoch ``e`` of an
    override on it is that override's absolute LR. So step ``i`` trains at ``(i + 1) * warmup_per_iter`` until step
    ``warmup_iters - 1`` (the peak, ``warmup_iters`` additions), holds there, and every step of an overridden epoch
    trains at the override. The ramp is summed one addition at a time as the code's running float is (the product
    ``(i + 1) * warmup_per_iter`` differs from that sum in the last bits at 19,967 of the 20,000 warm-up steps)."""
    fixed = sorted((int(e), float(lr)) for e, lr in cfg.fixed)
    ramp = [0.0]  # ramp[n]: the running LR after n additions
    for _ in range(cfg.warmup_iters):
        ramp.append(ramp[-1] + cfg.warmup_per_iter)

    def lr(i: int) -> float:
        epoch = i // steps_per_epoch
        out = ramp[min(i + 1, cfg.warmup_iters)]
        for e, value in fixed:
            if epoch >= e:
                out = value
        return out

    return lr


def stage_seed(seed: int, stage: str) -> int:
    """A stable 63-bit seed for one stage of a run (pre-training, round k, ...)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{stage}".encode()).digest()[:8], "big") >> 1


def autocast(device: torch.device, precision: str):
    """bf16 autocast of the forward pass and loss on CUDA and on the CPU; fp32 does nothing."""
    if precision == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class FastPath:
    """The fast-path switches a stage trains under, and what they cost.

    * ``channels_last``: the model's 4-d parameters and every 4-d input batch in NHWC memory
      format (what cuDNN's fastest convolutions want; values unchanged);
    * ``compile``: the forward pass and the loss through ``torch.compile`` (static shapes; AOTAutograd
      compiles the backward too). ``compile_s`` accumulates the wall time of each step that
      compiled (the first step of every batch shape in a ``train`` call, compile included), so the
      compile time is reported apart from the training time and amortised over the run.
    """

    channels_last: bool = False
    compile: bool = False
    compile_s: float = 0.0


_FAST: contextvars.ContextVar[FastPath | None] = contextvars.ContextVar("prunebench_fast_path", default=None)


def current_fast_path() -> FastPath:
    """The active :func:`fast_path` settings (all off outside one)."""
    return _FAST.get() or FastPath()


@contextlib.contextmanager
def fast_path(channels_last: bool = False, compile: bool = False):
    """Train and evaluate under these fast-path switches inside the ``with`` block; yields the
    :class:`FastPath`, whose ``compile_s`` the stages inside add to."""
    fp = FastPath(channels_last=channels_last, compile=compile)
    token = _FAST.set(fp)
    try:
        yield fp
    finally:
        _FAST.reset(token)


def _nhwc(x: torch.Tensor, fast: FastPath) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if fast.channels_last and x.dim() == 4 else x


def _forward_loss(model: nn.Module, device: torch.device, precision: str, fast: FastPath):
    """``(x, y) -> (logits, loss)``: eager, or through ``torch.compile`` with static shapes."""

    def forward_loss(x, y):
        with autocast(device, precision):
            out = model(x)
            loss = F.cross_entropy(out, y)
        return out, loss

    if not fast.compile:
        return forward_loss
    # one code object serves every model of the process (a Ray actor runs many trials): models of the
    # same architecture share a graph, and each architecture x batch shape x precision is one entry
    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    setattr(cfg, name, max(getattr(cfg, name), 64))
    return torch.compile(forward_loss, dynamic=False)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU. For timings (compile time, benchmarks)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
          precision: str = "fp32", state: TrainState | None = None, fast: FastPath | None = None,
          smoke: bool = False) -> TrainResult:
    """Run optimizer steps until ``steps`` in total; the data order and augmentation are drawn
    from ``seed``. ``state`` (from an ``after_epoch`` hook) resumes a stage where it stood.
    ``fast``: the fast-path switches (default: the active :func:`fast_path` context's).
    ``smoke``: only the first two and the last two steps of the stage run, each at its real position (the LR
    schedule and the step hooks see the step's index), then the last epoch ends (``prunebench run --smoke``)."""
    hooks = hooks or StepHooks()
    fast = fast if fast is not None else current_fast_path()
    device = data.device
    if fast.channels_last:
        model.to(memory_format=torch.channels_last)  # in place: the optimizer keeps the same parameters
    forward_loss = _forward_loss(model, device, precision, fast)
    compiled_shapes: set[tuple] = set()
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
    if smoke:
        return _smoke(model, data, steps, optimizer, scheduler, batch_size, drop_last, gen, hooks, forward_loss, st,
                      fast)
    while step < steps:
        finished_epoch = True
        for x, y in data.train_batches(gen, batch_size, drop_last):
            if step >= steps:
                finished_epoch = False
                break
            hooks.before_forward(step)
            x = _nhwc(x, fast)
            compiling = fast.compile and tuple(x.shape) not in compiled_shapes
            if compiling:  # the one host sync of a compiled stage's first step of each shape
                compiled_shapes.add(tuple(x.shape))
                sync(device)
                t0 = time.perf_counter()
            out, loss = forward_loss(x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if compiling:
                sync(device)
                fast.compile_s += time.perf_counter() - t0
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


def _jump(scheduler, step: int) -> None:
    """The LR schedule at optimizer step ``step`` without stepping through the ones before (closed form)."""
    scheduler.last_epoch = step
    closed = getattr(scheduler, "_get_closed_form_lr", None)
    lrs = closed() if closed is not None else scheduler.get_lr()
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr


def _smoke(model, data, steps, optimizer, scheduler, batch_size, drop_last, gen, hooks, forward_loss, st,
           fast) -> TrainResult:
    """The smoke run of a stage: steps ``first, first + 1, steps - 2, steps - 1`` at their real positions."""
    plan = sorted({s for s in (st.step, st.step + 1, steps - 2, steps - 1) if st.step <= s < steps})
    batches = iter(())
    loss_sum, n = 0.0, 0
    for step in plan:
        batch = next(batches, None)
        if batch is None:
            batches = data.train_batches(gen, batch_size, drop_last)
            batch = next(batches)
        x, y = batch
        if scheduler is not None:
            _jump(scheduler, step)
        hooks.before_forward(step)
        out, loss = forward_loss(_nhwc(x, fast), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        hooks.before_optimizer_step(step)
        optimizer.step()
        hooks.after_optimizer_step(step)
        loss_sum, n = loss_sum + float(loss.detach()), n + 1
    if steps > st.step:
        spe = len(range(0, (data.n_train // batch_size) * batch_size if drop_last else data.n_train, batch_size))
        epoch = max(st.epoch + 1, -(-steps // max(spe, 1)))
        hooks.after_epoch(epoch, TrainState(step=steps, epoch=epoch, generator=gen.get_state(),
                                            rng=torch.get_rng_state(), loss_sum=loss_sum, seen=n * batch_size))
    return TrainResult(steps, loss_sum / max(n, 1), 0.0)


@torch.no_grad()
def evaluate(model: nn.Module, batches, precision: str = "fp32") -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over ``batches`` in eval mode."""
    was_training = model.training
    model.eval()
    fast = current_fast_path()
    loss_sum = None
    correct = None
    n = 0
    for x, y in batches:
        with autocast(x.device, precision):
            out = model(_nhwc(x, fast)).float()
        l = F.cross_entropy(out, y, reduction="sum")
        c = (out.argmax(1) == y).sum()
        loss_sum = l if loss_sum is None else loss_sum + l
        correct = c if correct is None else correct + c
        n += y.numel()
    model.train(was_training)
    if n == 0:
        return float("nan"), float("nan")
    return float(correct) / n, float(loss_sum) / n
