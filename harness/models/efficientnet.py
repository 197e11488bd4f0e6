"""EfficientNet-B0, CIFAR variant, as used by LAMP's released code (lamp.md section 4.4).

Stride-1 3x3 stem (3 -> 32), seven MBConv stages, no 1280-channel head conv, adaptive avg-pool -> dropout 0.2 ->
Linear(320, n): 3,599,686 parameters and 30.3 M MACs at width 1.0, 10 classes.

Drop-connect is configured as 0.2 in the released code but its per-block rate evaluates to 0 (the block counter is
never advanced), so it is inactive there and deliberately not implemented here (lamp.md 4.4 and section 9, item 3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .vgg import scaled_width

# (expansion, out channels, repeats, kernel, first stride) per stage, lamp.md 4.4.
EFFNET_B0_CFG: list[tuple[int, int, int, int, int]] = [
    (1, 16, 1, 3, 1),
    (6, 24, 2, 3, 2),
    (6, 40, 2, 5, 2),
    (6, 80, 3, 3, 2),
    (6, 112, 3, 5, 1),
    (6, 192, 4, 5, 2),
    (6, 320, 1, 3, 1),
]


def swish(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(x)."""
    return x * torch.sigmoid(x)


class SqueezeExcite(nn.Module):
    """Global avg-pool -> 1x1 conv (bias) -> swish -> 1x1 conv (bias) -> sigmoid -> channel-wise multiply."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.se1 = nn.Conv2d(channels, reduced, 1, bias=True)
        self.se2 = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = swish(self.se1(F.adaptive_avg_pool2d(x, 1)))
        return x * torch.sigmoid(self.se2(s))


class MBConv(nn.Module):
    """Expansion 1x1 -> depthwise kxk -> SE -> projection 1x1 (+ residual when stride 1 and in == out).

    The expansion conv exists even when ``expansion == 1`` (it is then skipped in forward but stays in the prunable
    set, lamp.md 4.4 and section 9, item 2).
    """

    def __init__(self, in_c: int, out_c: int, kernel: int, stride: int, expansion: int, residual: bool) -> None:
        super().__init__()
        self.expansion = expansion
        mid = expansion * in_c
        self.conv1 = nn.Conv2d(in_c, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, kernel, stride=stride, padding=1 if kernel == 3 else 2, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.se = SqueezeExcite(mid, max(1, int(0.25 * in_c)))  # SE width from the block INPUT channels
        self.conv3 = nn.Conv2d(mid, out_c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_c)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.expansion == 1 else swish(self.bn1(self.conv1(x)))
        out = swish(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.se(out)))
        return out + x if self.residual else out


class EfficientNetCifar(nn.Module):
    """EfficientNet-B0 for 32x32 inputs; ``width`` scales the stem and stage widths, the rest follows from them."""

    def __init__(
        self,
        cfg: list[tuple[int, int, int, int, int]] = EFFNET_B0_CFG,
        num_classes: int = 10,
        width: float = 1.0,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        base_in = 32
        in_c = scaled_width(base_in, width)
        self.conv1 = nn.Conv2d(3, in_c, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_c)
        blocks: list[nn.Module] = []
        for expansion, base_out, repeats, kernel, first_stride in cfg:
            out_c = scaled_width(base_out, width)
            for j in range(repeats):
                stride = first_stride if j == 0 else 1
                # Residual decided on base widths so that the topology does not depend on ``width``.
                blocks.append(MBConv(in_c, out_c, kernel, stride, expansion, stride == 1 and base_in == base_out))
                in_c, base_in = out_c, base_out
        self.layers = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(swish(self.bn1(self.conv1(x))))
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return self.linear(self.dropout(out))


def efficientnet_b0_cifar_lamp(num_classes: int = 10, width: float = 1.0) -> EfficientNetCifar:
    """LAMP's CIFAR EfficientNet-B0 (lamp.md 4.4)."""
    return EfficientNetCifar(EFFNET_B0_CFG, num_classes=num_classes, width=width)
