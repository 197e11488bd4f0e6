"""torchvision's ``vgg16_bn`` used unchanged on 32x32 inputs: the ICLR'23 predecessor setup of PAGS (pags.md section
5.2, defect 5 of section 8; common.md sections 1.4 and 2.1).

``vgg16_bn_tv_4096fc``: features of config D (``VGG16_CFG``), each entry Conv 3x3 (pad 1, bias=True) - BN - ReLU, 2x2
max-pools after convs 2, 4, 7, 10 and 13 (32 -> 1x1); AdaptiveAvgPool(7, 7), which replicates the 1x1 map to 7x7;
classifier Linear(25088, 4096) - ReLU - Dropout(0.5) - Linear(4096, 4096) - ReLU - Dropout(0.5) - Linear(4096, n).
At width 1: 134,309,962 params (10 classes; 134,678,692 for 100), 134,289,088 Conv2d + Linear weights in 16 tensors, of
which 119,578,624 in the classifier; 432,775,168 MACs per 32x32 image (432.8 M; 119,578,624 of them in the classifier).

Structure: module names, parameter and buffer shapes and their order equal ``torchvision.models.vgg16_bn(num_classes)``
at width 1, and so does the construction order, so a torchvision ``state_dict`` loads strictly and, from the same RNG
state, the initial weights are bit-identical. torchvision already gives every ReLU site its own module; here they are
``inplace=False`` (15 sites) so a forward hook's captured output is not overwritten later in the forward pass.

Initialisation: torchvision's default -- conv ``kaiming_normal_(mode='fan_out', nonlinearity='relu')`` and bias 0, BN
weight 1 and bias 0, Linear weight N(0, 0.01) and bias 0. The ICLR'23 runs override it with the custom initialiser
``iclr23`` of :mod:`harness.models.init` (manifest ``init: iclr23``; pags.md 5.2).

``width`` scales, with ``scaled_width``, every conv's channel count and the two hidden classifier widths (4096); the
classifier input is the last conv width times 7 * 7 (25,088 = 512 * 49 at width 1), the output stays ``num_classes``.
The AdaptiveAvgPool(7, 7) and the dropout rate do not depend on ``width``.
"""

from __future__ import annotations

import torch
from torch import nn

from .vgg import vgg_features, VGG16_CFG, scaled_width

VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def torchvision_vgg_init(model: nn.Module) -> None:
    """torchvision ``VGG.__init__``'s init: conv Kaiming-normal fan_out / relu, bias 0; BN 1 / 0; Linear N(0, 0.01), 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.constant_(m.bias, 0)


class VGGTV(nn.Module):
    """torchvision's VGG with BN (``features`` / ``avgpool`` / ``classifier``) and a width multiplier."""

    def __init__(
        self,
        cfg: list[int | str] = VGG16_CFG,
        num_classes: int = 10,
        width: float = 1.0,
        hidden: int = 4096,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        layers, in_c = vgg_features(cfg, width)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        h = scaled_width(hidden, width)
        self.classifier = nn.Sequential(
            nn.Linear(in_c * 7 * 7, h),
            nn.ReLU(),
            nn.Dropout(p=dropout),
            nn.Linear(h, h),
            nn.ReLU(),
            nn.Dropout(p=dropout),
            nn.Linear(h, num_classes),
        )
        torchvision_vgg_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def vgg16_bn_tv_4096fc(num_classes: int = 10, width: float = 1.0) -> VGGTV:
    """torchvision vgg16_bn on 32x32 (pags.md 5.2): 134,309,962 params, 432.8 M MACs; torchvision init."""
    return VGGTV(VGG16_CFG, num_classes=num_classes, width=width)


def vgg19_bn_tv_4096fc(num_classes: int = 100, width: float = 1.0) -> VGGTV:
    """torchvision's ``vgg19_bn`` (config E: 16 convs, the 4096-wide classifier) as AP's released code defines it for
    CIFAR-100 (archs/cifar100/vgg.py: torchvision-style, AdaptiveAvgPool(7, 7)); used unchanged on 32x32 inputs."""
    return VGGTV(VGG19_CFG, num_classes=num_classes, width=width)
