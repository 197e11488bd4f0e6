"""CIFAR ResNets of the DPF setup (dpf.md section 3; common.md sections 1.4 and 2.1).

Two families, each kept under its own registry key because the paper's ResNet-56 variant is unverified
(dpf.md section 3.2 and section 6, defect 9):

* ``resnet{20,32,56}_cifar_optb``: the INCHEON third-party variant (dpf.md 3.1). 3x3 stem 3 -> 16, three stages of
  n = 3 / 5 / 9 BasicBlocks with widths 16 / 32 / 64 and first-block strides 1 / 2 / 2, option-B shortcuts (1x1 conv +
  BN where the shape changes: first block of stages 2 and 3), AdaptiveAvgPool(1) and Linear(64, n).
  ResNet-20: 272,474 params, 40.8 M MACs; ResNet-32: 466,906 / 69.1 M; ResNet-56: 855,770 / 125.8 M (10 classes).
* ``resnet56_cifar_bottleneck_lin``: the first author's framework, ``epfml/LocalSGD-Code`` (dpf.md 3.2), which switches
  to Bottleneck blocks for depth >= 44: 9 blocks per stage of 1x1 (-> w) / 3x3 (w, stride s) / 1x1 (-> 4w),
  w = 16 / 32 / 64, a 1x1 conv + BN projection at the first block of every stage (stage 1 included), AvgPool 8 and
  Linear(256, n): 869,530 params, 127.3 M MACs (10 classes).

Initialisation (dpf.md 3.1 / 3.2, common.md 1.3): every conv ``kaiming_normal_(mode='fan_out', nonlinearity='relu')``,
i.e. N(0, sqrt(2 / (k^2 C_out))) -- the INCHEON and the author's-framework rules coincide --, BN weight 1 and bias 0,
Linear left at the PyTorch default.

Every ReLU site is its own ``nn.ReLU`` module (no functional calls, no reused module) so forward hooks see every
activation; ``inplace=False`` so a hook's captured output is not overwritten later in the forward pass. ``width``
scales every channel count (``scaled_width``); which blocks get a projection shortcut is decided on the base widths,
so the module set does not depend on ``width``.
"""

from __future__ import annotations

import torch
from torch import nn

from .init import kaiming_fan_out

from .vgg import scaled_width


def _projection(in_c: int, out_c: int, stride: int) -> nn.Sequential:
    """Option-B shortcut: 1x1 conv (no bias) + BN."""
    return nn.Sequential(nn.Conv2d(in_c, out_c, 1, stride=stride, bias=False), nn.BatchNorm2d(out_c))


class BasicBlockB(nn.Module):
    """Conv3x3(s)-BN-ReLU-Conv3x3-BN, add the shortcut, ReLU (dpf.md 3.1)."""

    def __init__(self, in_c: int, out_c: int, stride: int, project: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_c, out_c, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_c)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_c, out_c, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_c)
        self.shortcut = _projection(in_c, out_c, stride) if project else nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class BottleneckB(nn.Module):
    """Conv1x1(-> w)-BN-ReLU-Conv3x3(w, s)-BN-ReLU-Conv1x1(-> 4w)-BN, add the shortcut, ReLU (dpf.md 3.2)."""

    def __init__(self, in_c: int, mid_c: int, out_c: int, stride: int, project: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_c, mid_c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_c)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(mid_c, mid_c, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_c)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(mid_c, out_c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_c)
        self.shortcut = _projection(in_c, out_c, stride) if project else nn.Identity()
        self.relu3 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + self.shortcut(x))


class ResNetCifarDPF(nn.Module):
    """Three-stage CIFAR ResNet (stem 16, stage widths 16/32/64 times the block expansion)."""

    def __init__(self, depth: int, bottleneck: bool, num_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
        # (depth - 2) / 6 blocks per stage for Bottleneck too, as in the author's framework (dpf.md 3.2: 9 at depth 56),
        # so the Bottleneck "ResNet-56" has 3 * 9 * 3 + 2 = 83 weighted layers on its main path.
        n = (depth - 2) // 6
        expansion = 4 if bottleneck else 1
        base_in = 16
        in_c = scaled_width(base_in, width)
        self.conv1 = nn.Conv2d(3, in_c, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_c)
        self.relu = nn.ReLU()
        stages: list[nn.Sequential] = []
        for i, base_mid in enumerate((16, 32, 64)):
            base_out = base_mid * expansion
            mid_c, out_c = scaled_width(base_mid, width), scaled_width(base_out, width)
            blocks: list[nn.Module] = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                project = stride != 1 or base_in != base_out
                if bottleneck:
                    blocks.append(BottleneckB(in_c, mid_c, out_c, stride, project))
                else:
                    blocks.append(BasicBlockB(in_c, out_c, stride, project))
                in_c, base_in = out_c, base_out
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        # INCHEON: AdaptiveAvgPool(1); the author's framework: AvgPool 8. Identical on the 8x8 maps of 32x32 inputs.
        self.pool = nn.AvgPool2d(8) if bottleneck else nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_c, num_classes)
        kaiming_fan_out(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(torch.flatten(self.pool(out), 1))




def resnet20_cifar_optb(num_classes: int = 10, width: float = 1.0) -> ResNetCifarDPF:
    """ResNet-20, BasicBlocks 3/3/3, option-B shortcuts (INCHEON; dpf.md 3.1): 272,474 params, 40.8 M MACs."""
    return ResNetCifarDPF(20, bottleneck=False, num_classes=num_classes, width=width)


def resnet32_cifar_optb(num_classes: int = 10, width: float = 1.0) -> ResNetCifarDPF:
    """ResNet-32, BasicBlocks 5/5/5, option-B shortcuts (INCHEON; dpf.md 3.1): 466,906 params, 69.1 M MACs."""
    return ResNetCifarDPF(32, bottleneck=False, num_classes=num_classes, width=width)


def resnet56_cifar_optb(num_classes: int = 10, width: float = 1.0) -> ResNetCifarDPF:
    """ResNet-56, BasicBlocks 9/9/9, option-B shortcuts (INCHEON; dpf.md 3.1): 855,770 params, 125.8 M MACs.

    The default DPF ResNet-56 (dpf.md section 9 and the INCHEON run command); manifest variant ``resnet56_basic``.
    """
    return ResNetCifarDPF(56, bottleneck=False, num_classes=num_classes, width=width)


def resnet56_cifar_bottleneck_lin(num_classes: int = 10, width: float = 1.0) -> ResNetCifarDPF:
    """ResNet-56 of ``epfml/LocalSGD-Code``: Bottlenecks 9/9/9, 3 projections (dpf.md 3.2): 869,530 params, 127.3 M.

    Manifest variant ``resnet56_bottleneck_lin`` (dpf.md section 6, defect 9).
    """
    return ResNetCifarDPF(56, bottleneck=True, num_classes=num_classes, width=width)
