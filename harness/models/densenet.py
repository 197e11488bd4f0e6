"""DenseNet-BC "121" with growth rate 12, as used by LAMP's released code (lamp.md section 4.3).

Block counts 6/12/24/16, 3x3 stem 3 -> 2*growth, bottleneck layers BN-ReLU-1x1(-> 4*growth)-BN-ReLU-3x3(-> growth)
with output ``concat([new, input])``, transitions BN-ReLU-1x1(-> floor(0.5*in))-AvgPool2, head BN-ReLU-AvgPool4-Linear:
1,000,618 parameters and 125.3 M MACs at width 1.0, 10 classes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .vgg import scaled_width


class Bottleneck(nn.Module):
    """Dense layer: BN-ReLU-Conv1x1(-> 4g)-BN-ReLU-Conv3x3(-> g); new features are concatenated first."""

    def __init__(self, in_c: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_c)
        self.relu1 = nn.ReLU()  # every ReLU site its own module: hooks see them all (dead-neuron rate)
        self.conv1 = nn.Conv2d(in_c, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu1(self.bn1(x)))
        out = self.conv2(self.relu2(self.bn2(out)))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    """BN-ReLU-Conv1x1(in -> out)-AvgPool 2x2."""

    def __init__(self, in_c: int, out_c: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_c)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(in_c, out_c, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(self.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    """DenseNet-BC; ``width`` scales the growth rate, every other width follows from it (2g stem, 4g bottleneck)."""

    def __init__(
        self,
        nblocks: tuple[int, ...] = (6, 12, 24, 16),
        growth: int = 12,
        reduction: float = 0.5,
        num_classes: int = 10,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        g = scaled_width(growth, width)
        c = 2 * g
        self.conv1 = nn.Conv2d(3, c, 3, padding=1, bias=False)
        for i, n in enumerate(nblocks, start=1):
            self.add_module(f"dense{i}", nn.Sequential(*[Bottleneck(c + k * g, g) for k in range(n)]))
            c += n * g
            if i < len(nblocks):
                out_c = int(math.floor(c * reduction))
                self.add_module(f"trans{i}", Transition(c, out_c))
                c = out_c
        self.bn = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.linear = nn.Linear(c, num_classes)
        self._stages = len(nblocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        for i in range(1, self._stages + 1):
            out = getattr(self, f"dense{i}")(out)
            if i < self._stages:
                out = getattr(self, f"trans{i}")(out)
        out = F.avg_pool2d(self.relu(self.bn(out)), 4)
        return self.linear(torch.flatten(out, 1))


def densenet_bc_121_g12(num_classes: int = 10, width: float = 1.0) -> DenseNet:
    """LAMP's "DenseNet-121": block counts 6/12/24/16 with growth rate 12 (lamp.md 4.3)."""
    return DenseNet((6, 12, 24, 16), growth=12, num_classes=num_classes, width=width)
