"""VGG16-D with BatchNorm of the first author's framework ``epfml/LocalSGD-Code`` (dpf.md section 3.2).

Features: config D (``VGG16_CFG``), each entry Conv3x3 (pad 1, bias=True) - BN - ReLU, 2x2 max-pools; the 32x32 input
leaves a 1x1x512 map, flattened straight into the classifier Dropout(0.5) - Linear(512, 512) - ReLU - Dropout(0.5) -
Linear(512, 512) - ReLU - Linear(512, n): 15,253,578 params and 313.7 M MACs at width 1.0, 10 classes (common.md 1.4).

Initialisation (dpf.md 3.2): conv weights N(0, sqrt(2 / (k^2 C_out))) (``kaiming_normal_`` fan_out / relu), conv biases
left at PyTorch's default uniform init (not zeroed), BN weight 1 and bias 0, Linear layers at the PyTorch default.

Every ReLU site is its own ``nn.ReLU`` module (``inplace=False``). ``width`` scales every channel count including the
classifier's hidden width.
"""

from __future__ import annotations

import torch
from torch import nn

from .init import kaiming_fan_out

from .vgg import vgg_features, VGG16_CFG, scaled_width


class VGG16D(nn.Module):
    """``vgg16d_bn_fc3_lin``: VGG16-D + BN with the 512-512-n dropout classifier."""

    def __init__(self, num_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        layers, in_c = vgg_features(VGG16_CFG, width)
        self.features = nn.Sequential(*layers)
        hidden = scaled_width(512, width)
        self.classifier = nn.Sequential(
            nn.Dropout(0.5),
            nn.Linear(in_c, hidden),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        kaiming_fan_out(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def vgg16d_bn_fc3_lin(num_classes: int = 10, width: float = 1.0) -> VGG16D:
    """VGG16-D + BN, classifier 512-512-n with dropout (dpf.md 3.2): 15,253,578 params, 313.7 M MACs."""
    return VGG16D(num_classes=num_classes, width=width)
