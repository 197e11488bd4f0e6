"""Boundary tests for one-line bugs the rest of the suite does not catch.

* ERK (lamp.md section 3): a layer joins the dense set only while its ratio S_l / U_l is
  *strictly* greater than 1. Writing ``>=`` makes a layer at ratio exactly 1 dense.
* The multistep LR schedule: the scheduler must be stepped once after every optimizer step, so a
  milestone at step ``m`` means steps ``< m`` use ``lr`` and steps ``>= m`` use ``lr * gamma``.
* AP's warm-up/fixed schedule (ap.md 3, resnet_20.py:239-253): the increment comes *before* every step, so step
  ``i`` trains at ``(i + 1) * warmup_per_iter`` (the first step not at 0), the ramp stops after ``warmup_iters``
  increments and holds, and an override epoch sets its absolute LR from its first step on.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness import train as train_mod
from harness.data import DeviceData
from harness.pruning.allocation import Layer, erk

try:
    from harness.config import LRScheduleConfig, OptimizerConfig
except ImportError:  # before the manifest -> config refactor
    from harness.manifest import LRScheduleConfig, OptimizerConfig


# ---------------------------------------------------------------------------------------------- ERK


def _layer(name: str, shape: tuple[int, ...], unmasked: int) -> Layer:
    """A layer whose mask has exactly ``unmasked`` True entries (the first ones in flat order)."""
    numel = math.prod(shape)
    weight = torch.arange(1, numel + 1, dtype=torch.float32).reshape(shape)
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[:unmasked] = True
    return Layer(name, weight, mask.reshape(shape), numel)


def _erk(spec: list[tuple[tuple[int, ...], int]], amount: float) -> list[int]:
    layers = [_layer(f"l{i}", shape, u) for i, (shape, u) in enumerate(spec)]
    assert [l.unmasked for l in layers] == [u for _, u in spec]
    scores = [l.weight.abs() for l in layers]  # ERK ignores the scores
    return erk(layers, scores, amount)


def test_erk_ratio_exactly_one_stays_sparse() -> None:
    # U = [42, 5], e = [6+12, 12+6] = [18, 18], T = (1 - 0.8) * 47 = 9.4.
    # Round 1: S_l = round(9.4 * 18/36) = round(4.7) = 5 for both; ratios 5/42 ~ 0.12 and 5/5 = 1.
    # 1 is not > 1, so nobody turns dense: survivors [5, 5].
    # (With ">=": layer 1 turns dense, then S_0 = round(9.4 - 5) = round(4.4) = 4 -> [4, 5].)
    assert _erk([((6, 12), 42), ((12, 6), 5)], 0.8) == [5, 5]


def test_erk_ratio_just_above_one_turns_dense() -> None:
    # U = [55, 5], e = [18, 18], T = (1 - 0.8) * 60 = 12 (11.999999999999998 in floating point).
    # Round 1: S_l = round(12 * 18/36) = round(6) = 6 for both; ratios 6/55 ~ 0.11 and 6/5 = 1.2 > 1:
    # layer 1 joins the dense set and keeps its 5. Round 2: budget 12 - 5 = 7, S_0 = round(7) = 7,
    # ratio 7/55 < 1: stop. Survivors [7, 5] (sum 12 = T; without the dense step it would be [6, 6]).
    assert _erk([((6, 12), 55), ((12, 6), 5)], 0.8) == [7, 5]


def test_erk_ratio_just_below_one_stays_sparse() -> None:
    # U = [170, 20], e = [20+20, 20+20] = [40, 40], T = (1 - 0.8) * 190 = 38 (37.99999999999999).
    # Round 1: S_l = round(38 * 40/80) = round(19) = 19 for both; ratios 19/170 ~ 0.11 and
    # 19/20 = 0.95 < 1: nobody turns dense. Survivors [19, 19].
    # (Were layer 1 made dense, it would be [18, 20]: S_0 = round(38 - 20) = 18.)
    assert _erk([((20, 20), 170), ((20, 20), 20)], 0.8) == [19, 19]


# ------------------------------------------------------------------------------------ LR schedule

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
