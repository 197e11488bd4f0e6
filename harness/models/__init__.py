"""Model registry: the networks of the paper sheets under unambiguous keys (common.md section 1.4)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .densenet import densenet_bc_121_g12
from .efficientnet import efficientnet_b0_cifar_lamp
from .resnet_cifar import resnet18_cifar_kuangliu
from .vgg import scaled_width, vgg16_bn_fc1_lamp

MODELS: dict[str, Callable[..., nn.Module]] = {
    "vgg16_bn_fc1_lamp": vgg16_bn_fc1_lamp,
    "resnet18_cifar_kuangliu": resnet18_cifar_kuangliu,
    "densenet_bc_121_g12": densenet_bc_121_g12,
    "efficientnet_b0_cifar_lamp": efficientnet_b0_cifar_lamp,
}

__all__ = ["MODELS", "build_model", "scaled_width"]


def build_model(arch: str, num_classes: int = 10, width: float = 1.0) -> nn.Module:
    """Build ``arch`` for 3x32x32 inputs with PyTorch default initialisation (lamp.md section 4).

    ``width`` multiplies every channel width, ``max(1, int(round(c * width)))`` (lamp.md section 11).
    """
    if arch not in MODELS:
        raise ValueError(f"unknown model '{arch}' (expected one of: {', '.join(sorted(MODELS))})")
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    return MODELS[arch](num_classes=num_classes, width=width)
