"""ResNet-18, CIFAR variant (kuangliu layout) as used by LAMP's released code (lamp.md section 4.2).

3x3 stride-1 stem without max-pool, four stages of two BasicBlocks (64/128/256/512), 1x1 conv + BN projection
shortcuts, 4x4 average pool and Linear(512, n): 11,173,962 parameters and 555.4 M MACs at width 1.0, 10 classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .vgg import scaled_width


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN; ReLU after the first BN and after the residual add (lamp.md 4.2)."""

    def __init__(self, in_c: int, out_c: int, stride: int, project: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_c, out_c, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_c)
        self.relu1 = nn.ReLU()  # every ReLU site its own module: hooks see them all (dead-neuron rate)
        self.conv2 = nn.Conv2d(out_c, out_c, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_c)
        self.shortcut = nn.Sequential()
        if project:
            self.shortcut = nn.Sequential(nn.Conv2d(in_c, out_c, 1, stride=stride, bias=False), nn.BatchNorm2d(out_c))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """CIFAR ResNet built from BasicBlocks; widths are scaled by ``width``, the topology is not."""

    def __init__(self, num_blocks: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        base_in = 64
        in_c = scaled_width(base_in, width)
        self.conv1 = nn.Conv2d(3, in_c, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_c)
        self.relu = nn.ReLU()
        stages: list[nn.Sequential] = []
        for i, n in enumerate(num_blocks):
            base_out = 64 * 2**i
            out_c = scaled_width(base_out, width)
            blocks: list[nn.Module] = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                # Projection decided on base widths so that the module set does not depend on ``width``.
                blocks.append(BasicBlock(in_c, out_c, stride, project=stride != 1 or base_in != base_out))
                in_c, base_in = out_c, base_out
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(in_c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return self.linear(torch.flatten(out, 1))


def resnet18_cifar_kuangliu(num_classes: int = 10, width: float = 1.0) -> ResNetCifar:
    """LAMP's "(downscaled) ResNet-18-like model" (lamp.md 4.2)."""
    return ResNetCifar((2, 2, 2, 2), num_classes=num_classes, width=width)
