"""Lockstep of every LR schedule the manifests use against its reference code: the LR of every optimizer step.

The project steps one scheduler once per optimizer step (:func:`harness.train.make_scheduler`, milestones in
steps); the references step per epoch (DPF, PAGS) or per iteration (AP), or not at all (LAMP). Each reference rule
below is an own transcription (pure torch, nothing from ``harness``), with its file and line:

* DPF, INCHEON-CHO/Dynamic_Model_Pruning_with_Feedback: ``main.py:70-73`` (SGD, then ``set_scheduler``),
  ``utils.py:175-176`` (``MultiStepLR(optimizer, milestones, gamma)``), ``main.py:121-150`` (per epoch: train over
  every batch, validate, then ``scheduler.step()``); the train loader keeps its partial last batch (``data.py:45-48``,
  no ``drop_last``). dpf.yaml's second schedule (60/120/160 ep, gamma 0.2) runs through the same mechanics.
* PAGS, VITA-Group/ramanujan-on-pai: ``main.py:415-418`` (``MultiStepLR`` with milestones
  ``[int(epochs / 2), int(epochs * 3 / 4)]``, default gamma 0.1), ``main.py:451-455`` (per epoch: train, then
  ``lr_scheduler.step()``); the loader keeps its partial batch (``lib/sparselearning/utils.py:74-78``).
* LAMP, jaeho-lee/layer-adaptive-sparsity: ``tools/modelloaders.py`` (every model: ``scheduler: None``, AdamW at
  3e-4), ``tools/train.py:16-20`` (no scheduler: the LR never changes).
* AP, Martin1937/Activate-While-Pruning: :class:`tests.reference.ap_code.LR` (``resnet_20.py:239-253``).

Checked two ways, exactly (``==`` on the floats): every step of each manifest's full-length schedule (the
scheduler alone, at the real dataset's steps per epoch: CIFAR's 50,000 images, the partial last batch counted), and
every step of a short run of each profile's schedule through :func:`harness.train.train` (10 images at batch 4:
3 steps per epoch, the last one partial). Planted differences must fail.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from harness import train as train_module
from harness.config.load import load
from harness.grid.expand import expand
from harness.config.schema import LRScheduleConfig
from harness.data.device import DeviceData
from harness.data.sources import SOURCES
from harness.train import StepHooks, make_optimizer, make_scheduler
from harness.units import duration_steps, steps_per_epoch
from tests.reference import ap_code

CONFIGS = Path(__file__).resolve().parents[2] / "paper_configs"
CIFAR_TRAIN = 50000


# ----------------------------------------------------------------------------- the references (pure torch)


def _per_epoch_multistep(lr: float, milestones: list[int], gamma: float, epochs: int, batches: int) -> list[float]:
    """A ``MultiStepLR`` stepped once after each epoch's ``batches`` steps: the LR each step trains at."""
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma)
    out = []
    for _ in range(epochs):
        out += [opt.param_groups[0]["lr"]] * batches  # every batch of the epoch at the optimizer's current LR
        opt.step()  # (no gradient: changes nothing; keeps the scheduler's order check quiet)
        sched.step()  # after the epoch's training (and validation)
    return out


def incheon_lrs(lr: float, milestones: list[int], gamma: float, epochs: int, n_train: int, batch: int) -> list[float]:
    """INCHEON main.py:121-150 with utils.py:175-176: ``len(train_loader) = ceil(n / batch)`` steps per epoch."""
    return _per_epoch_multistep(lr, milestones, gamma, epochs, math.ceil(n_train / batch))


def ramanujan_lrs(lr: float, epochs: int, n_train: int, batch: int, to_int=int) -> list[float]:
    """ramanujan-on-pai main.py:415-418, 451-455: milestones ``int(epochs / 2)``, ``int(epochs * 3 / 4)``."""
    return _per_epoch_multistep(lr, [to_int(epochs / 2), to_int(epochs * 3 / 4)], 0.1, epochs,
                                math.ceil(n_train / batch))


def lamp_lrs(lr: float, steps: int) -> list[float]:
    """LAMP tools/train.py:16-20: no scheduler, the optimizer's LR at every step."""
    return [lr] * steps


def ap_lrs(cfg: LRScheduleConfig, steps: int, batches_per_epoch: int) -> list[float]:
    """AP resnet_20.py:239-253 (ap_code.LR), with the manifest's constants: set_lr 0.1, the slope 0.1 / warm-up."""
    (e1, v1), (e2, v2) = cfg.fixed
    s = ap_code.Schedule(set_lr=0.1, warmup_iters=cfg.warmup_iters, first_drop=e1, second_drop=e2)
    assert (s.set_lr / s.warmup_iters, s.set_lr / 10, s.set_lr / 100) == (cfg.warmup_per_iter, v1, v2)
    lr = ap_code.LR(s)
    return [lr.before_step(i // batches_per_epoch) for i in range(steps)]


# ----------------------------------------------------------------------------- the project


def project_lrs(cfg: LRScheduleConfig, lr: float, spe: int, steps: int) -> list[float]:
    """The project's scheduler alone, stepped once per optimizer step."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make_scheduler(opt, cfg, spe)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scheduler.step() without optimizer.step(): nothing to optimise here
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            if sched is not None:
                sched.step()
    return out


class _LR(StepHooks):
    def __init__(self, opt):
        self.opt, self.lrs = opt, []

    def before_optimizer_step(self, step):
        self.lrs.append(self.opt.param_groups[0]["lr"])


N, BATCH = 10, 4  # 3 steps per epoch: 4, 4 and the partial 2


def run_lrs(training, epochs: int) -> list[float]:
    """The LR of every step of a short real training (harness.train.train) under ``training``'s optimizer and
    schedule, 10 tiny images at batch 4 (drop_last false)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (N, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (N,), generator=g)
    data = DeviceData(x, y, x[:2], y[:2], (0.5, 0.5, 0.5), (1.0, 1.0, 1.0), 0, "zeros", False)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    opt = make_optimizer(training.optimizer, model.parameters())
    spe = steps_per_epoch(N, BATCH, False)
    rec = _LR(opt)
    sched = make_scheduler(opt, training.lr_schedule, spe)
    train_module.train(model, data, steps=epochs * spe, optimizer=opt, scheduler=sched, batch_size=BATCH,
                       drop_last=False, seed=0, hooks=rec)
    return rec.lrs


def trainings(paper: str, profile: str | None, source: str | None = None) -> list:
    """The distinct training settings of a manifest's profile: of its experiments on in-memory datasets (CIFAR, SVHN,
    Fashion-MNIST: what the reference loops below read), or of those on ``source``."""
    specs = expand(load(CONFIGS / f"{paper}.yaml", profile=profile) if profile else load(CONFIGS / f"{paper}.yaml"))
    out = []
    for s in specs:
        if (s.dataset.source != source) if source else SOURCES[s.dataset.source].holding != "memory":
            continue
        if s.training not in out:
            out.append(s.training)
    return out


def epochs_of(duration: str) -> int:
    assert duration.endswith("ep"), duration
    return int(duration[:-2])


# ----------------------------------------------------------------------------- full-length schedules


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    yield


def test_dpf_full_schedules_equal_incheon_at_every_step():
    seen = 0
    for t in trainings("dpf", None):
        cfg = t.lr_schedule
        assert cfg.name == "multistep" and not t.drop_last
        epochs = epochs_of(t.pretrain)
        spe = steps_per_epoch(CIFAR_TRAIN, t.batch_size, t.drop_last)
        assert spe == 391  # 390 full batches of 128 and one of 80
        ref = incheon_lrs(t.optimizer.lr, [epochs_of(m) for m in cfg.milestones], cfg.gamma, epochs, CIFAR_TRAIN,
                          t.batch_size)
        assert project_lrs(cfg, t.optimizer.lr, spe, epochs * spe) == ref
        seen += 1
    assert seen == 3  # 150/225 of 300 (gamma 0.1), 60/120/160 of 200 (gamma 0.2), and DPF + FT's 300 + 30


def test_dpf_imagenet_schedule_equals_incheon_at_every_step():
    """Table 2: 90 epochs, /10 at 30, 60 and 80, batch 1024 over ImageNet's 1,281,167 images (1,252 steps an epoch,
    the last one partial), through INCHEON's per-epoch MultiStepLR."""
    (t,) = trainings("dpf", None, source="imagenet")
    spe = steps_per_epoch(1_281_167, t.batch_size, t.drop_last)
    assert (spe, t.batch_size, epochs_of(t.pretrain), t.optimizer.lr) == (1252, 1024, 90, 0.4)
    ref = incheon_lrs(0.4, [30, 60, 80], 0.1, 90, 1_281_167, 1024)
    assert project_lrs(t.lr_schedule, 0.4, spe, 90 * spe) == ref


def test_pags_full_schedule_equals_ramanujan_at_every_step():
    for profile in (None, "iclr23", "ci", "claims"):
        for t in trainings("pags", profile):
            epochs = epochs_of(t.pretrain)
            # the manifest's milestones are the code's int(E / 2), int(3 E / 4) of its own epochs
            assert [epochs_of(m) for m in t.lr_schedule.milestones] == [int(epochs / 2), int(epochs * 3 / 4)]
            assert t.lr_schedule.gamma == 0.1 and not t.drop_last
    train = CIFAR_TRAIN - 5000  # the 45k / 5k split: the last 5k are validation
    for profile, batch, spe_expected in ((None, 128, 352), ("iclr23", 256, 176)):  # the paper's 128, the predecessor's 256
        t = trainings("pags", profile)[0]
        spe = steps_per_epoch(train, t.batch_size, False)
        assert t.batch_size == batch and spe == spe_expected and epochs_of(t.pretrain) == 250
        ref = ramanujan_lrs(t.optimizer.lr, 250, train, t.batch_size)
        assert project_lrs(t.lr_schedule, t.optimizer.lr, spe, 250 * spe) == ref


def test_lamp_full_schedule_is_constant_as_the_code():
    for profile in (None, "ci", "claims"):
        for t in trainings("lamp", profile):
            assert t.lr_schedule.name == "constant" and t.optimizer.lr == 3e-4
            steps = duration_steps(t.pretrain, steps_per_epoch(CIFAR_TRAIN, t.batch_size, t.drop_last))
            assert project_lrs(t.lr_schedule, t.optimizer.lr, 500, steps) == lamp_lrs(3e-4, steps)


def test_ap_full_schedule_equals_the_code_at_every_step():
    for profile, n in ((None, CIFAR_TRAIN), ("ci", 256), ("claims", 512)):
        (t,) = trainings("ap", profile)
        spe = steps_per_epoch(n, t.batch_size, t.drop_last)
        steps = epochs_of(t.retrain) * spe
        assert project_lrs(t.lr_schedule, t.optimizer.lr, spe, steps) == ap_lrs(t.lr_schedule, steps, spe)
    assert spe == 16 and steps == 64  # claims: 512 / 32


# ----------------------------------------------------------------------------- short real runs


@pytest.mark.parametrize("paper", ["dpf", "pags", "lamp", "ap"])
def test_profile_schedules_through_the_training_loop(paper):
    """Each ci / claims schedule, over its whole length in epochs, through harness.train.train on 3-step epochs with a
    partial last batch: the LR of every step equals the reference loop's."""
    for profile in ("ci", "claims"):
        for t in trainings(paper, profile):
            lr, cfg = t.optimizer.lr, t.lr_schedule
            if paper == "dpf":
                epochs = epochs_of(t.pretrain)
                ref = incheon_lrs(lr, [epochs_of(m) for m in cfg.milestones], cfg.gamma, epochs, N, BATCH)
            elif paper == "pags":
                epochs = epochs_of(t.pretrain)
                ref = ramanujan_lrs(lr, epochs, N, BATCH)
            elif paper == "lamp":
                epochs, ref = 3, lamp_lrs(lr, 9)
            else:
                epochs = epochs_of(t.retrain)
                ref = ap_lrs(cfg, 3 * epochs, 3)
            got = run_lrs(t, epochs)
            assert len(got) == 3 * epochs and got == ref, (paper, profile)


# ----------------------------------------------------------------------------- planted differences


def test_planted_differences_fail():
    t = trainings("dpf", None)[0]
    cfg, lr = t.lr_schedule, t.optimizer.lr
    ref = incheon_lrs(lr, [150, 225], 0.1, 300, CIFAR_TRAIN, 128)
    # milestones converted with the drop_last count (390 steps per epoch) while the loader keeps the partial batch
    assert project_lrs(cfg, lr, CIFAR_TRAIN // 128, 300 * 391) != ref
    # the reference's scheduler stepped before the epoch instead of after it (one epoch early)
    early = incheon_lrs(lr, [149, 224], 0.1, 300, CIFAR_TRAIN, 128)
    assert project_lrs(cfg, lr, 391, 300 * 391) != early
    # PAGS milestones rounded instead of truncated: int(187.5) = 187, round(187.5) = 188
    p = trainings("pags", None)[0]
    assert project_lrs(p.lr_schedule, p.optimizer.lr, 196, 250 * 196) != ramanujan_lrs(0.1, 250, CIFAR_TRAIN, 256,
                                                                                       to_int=round)
    # LAMP with a decay the code does not have
    decay = LRScheduleConfig("multistep", milestones=("1ep",), gamma=0.1)
    assert project_lrs(decay, 3e-4, 500, 1000) != lamp_lrs(3e-4, 1000)
    # AP's warm-up one iteration late (the project's previous rule: step i at i * warmup_per_iter)
    (a,) = trainings("ap", None)
    late = [a.lr_schedule.warmup_per_iter * min(i, a.lr_schedule.warmup_iters) if i // 782 < 25 else
            (0.01 if i // 782 < 32 else 0.001) for i in range(50 * 782)]
    assert late != ap_lrs(a.lr_schedule, 50 * 782, 782)
    assert sum(x != y for x, y in zip(late, ap_lrs(a.lr_schedule, 50 * 782, 782))) >= 19550  # every warm-up step
