"""Pre-activation WideResNet-28-k of the first author's framework ``epfml/LocalSGD-Code`` (dpf.md section 3.2).

Stem Conv3x3 3 -> 16 (no bias); three groups of N = (28 - 4) / 6 = 4 blocks with widths 16k / 32k / 64k and strides
1 / 2 / 2; block BN-ReLU-Conv3x3(s)-BN-ReLU-[dropout]-Conv3x3, added to the identity, or, where the block's input and
output widths differ, to a 1x1 conv (stride s, no bias, no BN) of the *pre-activated* input (the block's first
BN-ReLU is then shared by both paths); head BN-ReLU-AvgPool 8-Linear(64k, n).

Counts at width 1.0, 10 classes (dpf.md section 3 table; common.md 2.1): WRN-28-2 1,467,610 params, 214.4 M MACs (the
paper quotes 1.47 M / 216 M); WRN-28-4 5,849,050 / 845.6 M; WRN-28-8 23,354,842 / 3,360 M.

Dropout: the framework's ``--drop_rate`` defaults to 0.0 (dpf.md 3.2), so the registered builders have no dropout
and no Dropout module; ``WideResNet(drop_rate=p)`` with p > 0 adds an ``nn.Dropout(p)`` between the block's second
ReLU and second conv, where the framework applies ``F.dropout``.

Initialisation (dpf.md 3.2): conv N(0, sqrt(2 / (k^2 C_out))) (``kaiming_normal_`` fan_out / relu), BN weight 1 and
bias 0, Linear weight at the PyTorch default and Linear bias zeroed.

Every ReLU site is its own ``nn.ReLU`` module (``inplace=False``), so forward hooks see each activation exactly once.
``width`` scales every channel count; which blocks project is decided on the base widths.
"""

from __future__ import annotations

import torch
from torch import nn

from .init import kaiming_fan_out

from .vgg import scaled_width


class PreActBlock(nn.Module):
    """BN-ReLU-Conv3x3(s)-BN-ReLU-[Dropout]-Conv3x3 plus identity or 1x1 conv of the pre-activated input."""

    def __init__(self, in_c: int, out_c: int, stride: int, project: bool, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_c)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_c, out_c, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_c)
        self.relu2 = nn.ReLU()
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_c, out_c, 3, stride=1, padding=1, bias=False)
        self.shortcut = nn.Conv2d(in_c, out_c, 1, stride=stride, bias=False) if project else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu1(self.bn1(x))
        out = self.conv2(self.dropout(self.relu2(self.bn2(self.conv1(pre)))))
        # Called after conv2 so that module order equals call order (the result is the same).
        return out + (self.shortcut(pre) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    """WRN-depth-k, pre-activation, as in ``epfml/LocalSGD-Code``."""

    def __init__(
        self, depth: int = 28, k: int = 2, num_classes: int = 10, width: float = 1.0, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        base_in = 16
        in_c = scaled_width(base_in, width)
        self.conv1 = nn.Conv2d(3, in_c, 3, stride=1, padding=1, bias=False)
        groups: list[nn.Sequential] = []
        for i, base_out in enumerate((16 * k, 32 * k, 64 * k)):
            out_c = scaled_width(base_out, width)
            blocks: list[nn.Module] = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                # The framework projects where in != out channels (which includes every stride-2 block here).
                blocks.append(PreActBlock(in_c, out_c, stride, project=base_in != base_out, drop_rate=drop_rate))
                in_c, base_in = out_c, base_out
            groups.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(in_c)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(8)
        self.fc = nn.Linear(in_c, num_classes)
        kaiming_fan_out(self)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.pool(self.relu(self.bn(out)))
        return self.fc(torch.flatten(out, 1))


def wrn28_2_preact_lin(num_classes: int = 10, width: float = 1.0) -> WideResNet:
    """WRN-28-2, no dropout (dpf.md 3.2): 1,467,610 params, 214.4 M MACs."""
    return WideResNet(28, 2, num_classes=num_classes, width=width)


def wrn28_4_preact_lin(num_classes: int = 10, width: float = 1.0) -> WideResNet:
    """WRN-28-4, no dropout (dpf.md 3.2): 5,849,050 params, 845.6 M MACs."""
    return WideResNet(28, 4, num_classes=num_classes, width=width)


def wrn28_8_preact_lin(num_classes: int = 10, width: float = 1.0) -> WideResNet:
    """WRN-28-8, no dropout (dpf.md 3.2): 23,354,842 params, 3,360 M MACs."""
    return WideResNet(28, 8, num_classes=num_classes, width=width)
