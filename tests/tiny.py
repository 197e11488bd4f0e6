"""Small inputs shared by the unit tests (no tests here): random uint8 images on the CPU as a DeviceData, and the
tiny ResNet-20 most mask tests train."""

from __future__ import annotations

import torch
from torch import nn

from harness.data.device import DeviceData
from harness.models.build import build_model

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
FLAT_MEAN, FLAT_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def images(n: int = 64, seed: int = 0, mean=CIFAR_MEAN, std=CIFAR_STD, pad_mode: str = "zeros") -> DeviceData:
    """``n`` random 3x32x32 images with labels 0-9 (the test split: the first 16 of them), crop padding 4 and flips."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DeviceData(x, y, x[:16], y[:16], mean, std, 4, pad_mode, True)


def resnet20(seed: int = 0, width: float = 0.25) -> nn.Module:
    """ResNet-20 (option B) at ``width``, initialised from ``seed``."""
    torch.manual_seed(seed)
    return build_model("resnet20_cifar_optb", 10, width)
