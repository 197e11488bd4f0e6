"""Plumbing shared by the lockstep tests: tiny data, tiny models, and the exact batch stream the
project's :func:`harness.train.train` draws, so a transcription of a reference loop can be fed the
same batches in the same order as the project's run.

The transcriptions themselves (the other modules of this package) import nothing from
``harness``: they are written from the reference code, rule by rule, each rule citing its file and
line there. Only the tests import both sides.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from harness.data import DeviceData
from harness.models import build_model

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
