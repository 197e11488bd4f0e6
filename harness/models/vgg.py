"""VGG-16 as defined by LAMP's released code (lamp.md section 4.1; common.md section 1.4).

Conv 3x3 (bias=True) + BatchNorm + ReLU per config entry, 2x2 max-pools, a no-op AvgPool2d(1, 1) and a single
Linear(512, n) classifier: 14,728,266 parameters and 313.2 M MACs at width 1.0, 10 classes.
"""

from __future__ import annotations

import torch
from torch import nn

VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def scaled_width(channels: int, width: float) -> int:
    """Channel count under the width multiplier: ``max(1, int(round(channels * width)))`` (lamp.md section 11)."""
    return max(1, int(round(channels * width)))


def vgg_features(cfg: list[int | str], width: float) -> tuple[list[nn.Module], int]:
    """The VGG feature stack shared by every VGG here: per config entry Conv 3x3 (bias) + BN + ReLU
    (each ReLU its own module, for the dead-neuron hooks), ``"M"`` a 2x2 max-pool; returns the
    modules and the last width."""
    layers: list[nn.Module] = []
    in_c = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            out_c = scaled_width(int(v), width)
            layers += [nn.Conv2d(in_c, out_c, 3, padding=1, bias=True), nn.BatchNorm2d(out_c), nn.ReLU()]
            in_c = out_c
    return layers, in_c


class VGG(nn.Module):
    """LAMP's VGG-16 (``vgg16_bn_fc1_lamp``); every width, classifier input included, is scaled by ``width``."""

    def __init__(self, cfg: list[int | str] = VGG16_CFG, num_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        layers, in_c = vgg_features(cfg, width)
        layers.append(nn.AvgPool2d(kernel_size=1, stride=1))  # no-op, kept as in the released code
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def vgg16_bn_fc1_lamp(num_classes: int = 10, width: float = 1.0) -> VGG:
    """LAMP's VGG-16: conv bias + BN, single Linear(512, n) (lamp.md 4.1)."""
    return VGG(VGG16_CFG, num_classes=num_classes, width=width)
