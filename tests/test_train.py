"""harness/train.py's LR schedules in the training loop: the multistep schedule changes exactly at its milestones
(stepped once after every optimizer step), a constant one holds, and AP's warm-up/fixed schedule (ap.md 3,
resnet_20.py:239-253): the increment comes *before* every step, so step ``i`` trains at ``(i + 1) * warmup_per_iter``,
the ramp stops after ``warmup_iters`` increments and holds, and an override epoch sets its absolute LR from its first
step on."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from harness import train as train_mod
from harness.data.device import DeviceData
import dataclasses
from harness.config.schema import LRScheduleConfig
from harness.train import make_scheduler, warmup_fixed_lr

from harness.config import OptimizerConfig


N_TRAIN, BATCH = 8, 2


STEPS_PER_EPOCH = N_TRAIN // BATCH  # 4 with drop_last


LR, GAMMA = 0.1, 0.1


MILESTONES = ("2ep", "11it")  # -> optimizer steps 8 and 11


STEPS = 14


def _tiny_data() -> DeviceData:
    g = torch.Generator().manual_seed(0)
    # pixels close to the mean keep the logits small: the softmax never saturates, gradients stay non-zero
    x = torch.randint(118, 138, (N_TRAIN, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.arange(N_TRAIN) % 10
    return DeviceData(x, y, x[:2].clone(), y[:2].clone(), mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0),
                      crop_padding=0, pad_mode="zeros", hflip=False, device="cpu")


class _LrRecorder(train_mod.StepHooks):
    """Records, per step, the lr in the optimizer when it steps and the lr the update really used
    (plain SGD: delta = -lr * grad, measured on the Linear bias), plus the lr right after the step."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer) -> None:
        self.opt = opt
        self.bias = model[1].bias
        self.steps: list[int] = []
        self.lr_at_step: list[float] = []
        self.effective_lr: list[float] = []
        self.lr_after_step: list[float] = []
        self._before: torch.Tensor | None = None
        self._grad: torch.Tensor | None = None

    def before_optimizer_step(self, step: int) -> None:
        self.steps.append(step)
        self.lr_at_step.append(self.opt.param_groups[0]["lr"])
        self._before = self.bias.detach().clone().double()
        self._grad = self.bias.grad.detach().clone().double()

    def after_optimizer_step(self, step: int) -> None:
        delta = self.bias.detach().double() - self._before
        g = self._grad
        assert float(g @ g) > 0.0
        self.effective_lr.append(float(-(delta @ g) / (g @ g)))
        self.lr_after_step.append(self.opt.param_groups[0]["lr"])


def _expected_lr(step: int) -> float:
    """lr used by optimizer step ``step`` (0-based): milestones at 8 ("2ep" x 4) and 11 ("11it")."""
    return LR * GAMMA ** ((step >= 8) + (step >= 11))


def test_multistep_lr_changes_exactly_at_milestones() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    opt = train_mod.make_optimizer(OptimizerConfig(name="sgd", lr=LR, weight_decay=0.0, momentum=0.0), model.parameters())
    sched = train_mod.make_scheduler(opt, LRScheduleConfig(name="multistep", milestones=MILESTONES, gamma=GAMMA),
                                     STEPS_PER_EPOCH)
    assert sched is not None
    assert sorted(sched.milestones.elements()) == [8, 11]
    hooks = _LrRecorder(model, opt)
    res = train_mod.train(model, _tiny_data(), steps=STEPS, optimizer=opt, scheduler=sched, batch_size=BATCH,
                          drop_last=True, seed=0, hooks=hooks)
    assert res.steps == STEPS
    assert hooks.steps == list(range(STEPS))

    expected = [_expected_lr(s) for s in range(STEPS)]
    # around each milestone, spelled out (an off-by-one in either direction fails here)
    assert hooks.lr_at_step[7] == pytest.approx(0.1, rel=1e-12)
    assert hooks.lr_at_step[8] == pytest.approx(0.01, rel=1e-12)
    assert hooks.lr_at_step[9] == pytest.approx(0.01, rel=1e-12)
    assert hooks.lr_at_step[10] == pytest.approx(0.01, rel=1e-12)
    assert hooks.lr_at_step[11] == pytest.approx(0.001, rel=1e-12)
    assert hooks.lr_at_step[12] == pytest.approx(0.001, rel=1e-12)
    assert hooks.lr_at_step == pytest.approx(expected, rel=1e-12)
    # the update itself was made with that lr (float32 weights: loose tolerance, the lrs differ 10x)
    assert hooks.effective_lr == pytest.approx(expected, rel=1e-3)
    # the scheduler steps right after each optimizer step: the lr seen afterwards is the next step's
    assert hooks.lr_after_step == pytest.approx([_expected_lr(s + 1) for s in range(STEPS)], rel=1e-12)
    # after training
    assert sched.last_epoch == STEPS
    assert opt.param_groups[0]["lr"] == pytest.approx(0.001, rel=1e-12)
    assert sched.get_last_lr() == pytest.approx([0.001], rel=1e-12)


def test_constant_schedule_keeps_lr() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    opt = train_mod.make_optimizer(OptimizerConfig(name="sgd", lr=LR, weight_decay=0.0, momentum=0.0), model.parameters())
    assert train_mod.make_scheduler(opt, LRScheduleConfig(name="constant"), STEPS_PER_EPOCH) is None
    hooks = _LrRecorder(model, opt)
    train_mod.train(model, _tiny_data(), steps=5, optimizer=opt, scheduler=None, batch_size=BATCH,
                    drop_last=True, seed=0, hooks=hooks)
    assert hooks.lr_at_step == [LR] * 5
    assert hooks.effective_lr == pytest.approx([LR] * 5, rel=1e-3)


def test_warmup_fixed_lr_at_its_boundaries_in_the_loop() -> None:
    # 4 steps per epoch; 0.025 added before each of the first 6 steps (steps 0-5: 0.025 ... 0.15), steps 6-7 hold at
    # the peak, 0-based epoch 2 (step 8 on) at the absolute 0.01, epoch 3 (step 12 on) at 0.001
    cfg = LRScheduleConfig(name="warmup_fixed", warmup_per_iter=0.025, warmup_iters=6, fixed=((2, 0.01), (3, 0.001)))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    opt = train_mod.make_optimizer(OptimizerConfig(name="sgd", lr=LR, weight_decay=0.0, momentum=0.0), model.parameters())
    sched = train_mod.make_scheduler(opt, cfg, STEPS_PER_EPOCH)
    hooks = _LrRecorder(model, opt)
    train_mod.train(model, _tiny_data(), steps=STEPS, optimizer=opt, scheduler=sched, batch_size=BATCH,
                    drop_last=True, seed=0, hooks=hooks)
    lrs = hooks.lr_at_step
    assert lrs[0] == 0.025  # the first step: one increment, not 0 (the late rule gave 0 here)
    assert lrs[1] == 0.05
    assert lrs[5] == pytest.approx(0.15) and lrs[4] == pytest.approx(0.125)  # the last warm-up step: 6 increments
    assert lrs[6] == lrs[7] == lrs[5]  # the hold after the warm-up
    assert lrs[8] == 0.01 and lrs[7] != 0.01  # the first step of the first fixed epoch, not one before
    assert lrs[11] == 0.01 and lrs[12] == 0.001 and lrs[13] == 0.001
    # the updates were made with those LRs
    assert hooks.effective_lr == pytest.approx(lrs, rel=1e-3)
    # a new training's scheduler starts over at one increment
    opt2 = train_mod.make_optimizer(OptimizerConfig(name="sgd", lr=LR, weight_decay=0.0, momentum=0.0),
                                    model.parameters())
    train_mod.make_scheduler(opt2, cfg, STEPS_PER_EPOCH)
    assert opt2.param_groups[0]["lr"] == 0.025


FULL = LRScheduleConfig("warmup_fixed", warmup_per_iter=5.0e-6, warmup_iters=20000, fixed=((25, 0.01), (32, 0.001)))


def _code_lrs(steps: int, steps_per_epoch: int, per_iter: float, warmup_iters: int, fixed) -> list[float]:
    """The released code's per-iteration LR, its arithmetic (resnet_20.py:143-145, 171, 239-253): before every
    step the count goes up, the running float gets ``per_iter`` added while the count is <= warmup_iters, and an
    override epoch sets the absolute value."""
    out, lr, count = [], 0.0, 0
    for i in range(steps):
        count += 1
        if count <= warmup_iters:
            lr = lr + per_iter
        for e, v in fixed:
            if i // steps_per_epoch >= e:
                lr = v
        out.append(lr)
    return out


def test_warmup_fixed_values_at_breakpoints():
    lr = warmup_fixed_lr(FULL, 782)
    assert lr(0) == 5e-6  # the first step already trains at one increment (the code adds before every step)
    assert lr(1) == 1e-5
    assert lr(9999) == pytest.approx(0.05)  # 10,000 increments of 0.1 / 20,000
    peak = 782 * 25 * 5e-6  # 19,550 increments: the last step of epoch 24, ~0.09775
    assert lr(782 * 25 - 1) == pytest.approx(peak) and lr(782 * 25 - 2) == pytest.approx(peak - 5e-6)
    assert lr(782 * 25) == 0.01  # first step of 0-based epoch 25 (0.1 / 10 in the code: the same double)
    assert lr(782 * 32 - 1) == 0.01
    assert lr(782 * 32) == 0.001  # first step of 0-based epoch 32
    assert lr(782 * 50 - 1) == 0.001
    # off by one at either override boundary must show
    assert lr(782 * 25 - 1) != pytest.approx(0.01) and lr(782 * 32 - 1) != pytest.approx(0.001)
    # the warm-up's end (without overrides): 20,000 increments at step 19,999, then it holds
    plain = warmup_fixed_lr(dataclasses.replace(FULL, fixed=()), 782)
    assert plain(19998) == pytest.approx(0.099995) and plain(19999) == pytest.approx(0.1)
    assert plain(19999) == plain(20000) == plain(30000) and plain(19998) < plain(19999)
    # every step of the full profile's training (39,100 steps), the code's running float bit for bit
    assert [lr(i) for i in range(782 * 50)] == _code_lrs(782 * 50, 782, 5e-6, 20000, [(25, 0.01), (32, 0.001)])
    assert [plain(i) for i in range(25000)] == _code_lrs(25000, 782, 5e-6, 20000, [])


def test_warmup_fixed_scheduler_steps_per_iteration_and_restarts():
    cfg = LRScheduleConfig("warmup_fixed", warmup_per_iter=0.00625, warmup_iters=16, fixed=((2, 0.01), (3, 0.001)))
    # the ci schedule, 8 steps per epoch: steps 0..15 at (i + 1) * 0.1 / 16 (step 15 at 0.1), then the overrides
    expected = _code_lrs(32, 8, 0.00625, 16, [(2, 0.01), (3, 0.001)])
    assert expected[:16] == pytest.approx([0.00625 * (i + 1) for i in range(16)]) and expected[15] == pytest.approx(0.1)
    assert expected[16:] == [0.01] * 8 + [0.001] * 8
    for base in (0.1, 0.0):  # a new training gets a new scheduler: it starts over; the optimizer's lr plays no part
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base)
        sched = make_scheduler(opt, cfg, 8)
        seen = []
        for _ in range(32):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert seen == expected  # exactly
