"""torchvision's own definitions, used as they are (DenseNet-121, MobileNetV2, ViT-B/16) for the AP paper's networks,
and Frankle & Carbin's Conv-6 for LAMP's Conv-6 row. Which exact variants the papers trained is not stated in their
sheets (paper_configs/ap.yaml and lamp.yaml declare these as assumptions).

* ``densenet121_tv``: ``torchvision.models.DenseNet`` (growth 32, blocks 6-12-24-16, 7x7/2 stem + max-pool: AP's
  released archs/cifar10/densenet.py is this network); ``width`` scales the growth rate and the stem's features.
  Its in-place ReLU modules are made out-of-place, so a forward hook's captured output stays as it was.
* ``mobilenet_v2_tv``: ``torchvision.models.mobilenet_v2(width_mult=width)`` (ReLU6 activations, no ReLU site).
* ``vit_b16_tv``: ``torchvision.models.VisionTransformer`` as ``vit_b_16`` (224 px, patch 16, 12 layers, hidden 768,
  MLP 3072, 12 heads); ``width`` scales the heads (64 dimensions each), the hidden size and the MLP with them.
* ``conv6_frankle``: Conv-6 of Frankle & Carbin (2019, the lottery ticket paper): conv3x3 64-64, max-pool, 128-128,
  max-pool, 256-256, max-pool, then Linear 4096-256, 256-256, 256-n, ReLU after every layer but the last; for 32x32
  inputs; PyTorch's default initialisation (LAMP's models use it).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models as tvm

from .vgg import scaled_width


def _out_of_place(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            m.inplace = False
    return model


def densenet121_tv(num_classes: int = 100, width: float = 1.0) -> nn.Module:
    return _out_of_place(tvm.DenseNet(growth_rate=scaled_width(32, width), block_config=(6, 12, 24, 16),
                                      num_init_features=scaled_width(64, width), num_classes=num_classes))


def mobilenet_v2_tv(num_classes: int = 100, width: float = 1.0) -> nn.Module:
    return _out_of_place(tvm.mobilenet_v2(num_classes=num_classes, width_mult=width))


def vit_b16_tv(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    heads = max(1, round(12 * width))
    return tvm.VisionTransformer(image_size=224, patch_size=16, num_layers=12, num_heads=heads,
                                 hidden_dim=64 * heads, mlp_dim=4 * 64 * heads, num_classes=num_classes)


class Conv6(nn.Module):
    def __init__(self, num_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        c = [scaled_width(v, width) for v in (64, 128, 256)]
        layers: list[nn.Module] = []
        in_c = 3
        for out in c:
            layers += [nn.Conv2d(in_c, out, 3, padding=1), nn.ReLU(), nn.Conv2d(out, out, 3, padding=1), nn.ReLU(),
                       nn.MaxPool2d(2)]
            in_c = out
        self.features = nn.Sequential(*layers)
        hidden = scaled_width(256, width)
        self.classifier = nn.Sequential(nn.Linear(in_c * 16, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def conv6_frankle(num_classes: int = 10, width: float = 1.0) -> nn.Module:
    return Conv6(num_classes, width)
