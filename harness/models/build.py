"""Building a model: the builder of every architecture of the catalog (:mod:`harness.models`), and its initialiser."""

from __future__ import annotations

import json
from collections.abc import Callable

from torch import nn

from harness.metrics import count_params, macs

from .catalog import COSTS_FILE, _costs, _key
from .densenet import densenet_bc_121_g12
from .efficientnet import efficientnet_b0_cifar_lamp
from .resnet_cifar import resnet18_cifar_kuangliu
from .resnet_cifar_dpf import (
    resnet20_cifar_optb,
    resnet32_cifar_optb,
    resnet56_cifar_bottleneck_lin,
    resnet56_cifar_optb,
)
from .resnet_tv import resnet18_tv_imagenet_stem, resnet34_tv_imagenet_stem, resnet50_tv
from .vgg import scaled_width, vgg16_bn_fc1_lamp
from .vgg16_tv import vgg16_bn_tv_4096fc, vgg19_bn_tv_4096fc
from .vgg16d import vgg16d_bn_fc3_lin
from .init import INITS
from .wideresnet import wrn28_2_preact_lin, wrn28_4_preact_lin, wrn28_8_preact_lin
from .zoo_tv import conv6_frankle, densenet121_tv, mobilenet_v2_tv, vit_b16_tv

MODELS: dict[str, Callable[..., nn.Module]] = {
    "vgg16_bn_fc1_lamp": vgg16_bn_fc1_lamp,
    "resnet18_cifar_kuangliu": resnet18_cifar_kuangliu,
    "densenet_bc_121_g12": densenet_bc_121_g12,
    "efficientnet_b0_cifar_lamp": efficientnet_b0_cifar_lamp,
    # DPF (dpf.md section 3): INCHEON BasicBlock ResNets with option-B shortcuts (3.1) ...
    "resnet20_cifar_optb": resnet20_cifar_optb,
    "resnet32_cifar_optb": resnet32_cifar_optb,
    "resnet56_cifar_optb": resnet56_cifar_optb,
    # ... and the first author's framework, epfml/LocalSGD-Code (3.2).
    "resnet56_cifar_bottleneck_lin": resnet56_cifar_bottleneck_lin,
    "wrn28_2_preact_lin": wrn28_2_preact_lin,
    "wrn28_4_preact_lin": wrn28_4_preact_lin,
    "wrn28_8_preact_lin": wrn28_8_preact_lin,
    "vgg16d_bn_fc3_lin": vgg16d_bn_fc3_lin,
    # PAGS (pags.md 5.2): the ICLR'23 predecessor's torchvision ImageNet definitions used unchanged on 32x32 inputs,
    # named apart from the CIFAR-stem / small-classifier variants (pags.md 8, defect 5; common.md 1.4).
    "resnet34_tv_imagenet_stem": resnet34_tv_imagenet_stem,
    "resnet18_tv_imagenet_stem": resnet18_tv_imagenet_stem,  # the PAGS paper's second backbone (pags.md 1.1)
    "vgg16_bn_tv_4096fc": vgg16_bn_tv_4096fc,
    # the tables of issue 16: ImageNet-scale and AP's CIFAR-100 networks (torchvision's definitions), LAMP's Conv-6
    "resnet50_tv": resnet50_tv,
    "vgg19_bn_tv_4096fc": vgg19_bn_tv_4096fc,
    "densenet121_tv": densenet121_tv,
    "mobilenet_v2_tv": mobilenet_v2_tv,
    "vit_b16_tv": vit_b16_tv,
    "conv6_frankle": conv6_frankle,
}

__all__ = ["MODELS", "build_model", "scaled_width"]


def build_model(arch: str, num_classes: int = 10, width: float = 1.0, init: str | None = None) -> nn.Module:
    """Build ``arch`` with its paper's initialisation, stated in each builder's module docstring (for 3x32x32 inputs,
    or any size where the builder pools adaptively: the torchvision layouts; ViT-B/16 wants 224x224).

    The LAMP models use PyTorch default initialisation (lamp.md section 4); the DPF models use Kaiming-normal fan_out
    convs and BN weight 1 / bias 0 (dpf.md sections 3.1 and 3.2). The PAGS models use torchvision's default init
    (pags.md section 5.2); their runs name ``init="iclr23"``, which overrides it.

    ``width`` multiplies every channel width, ``max(1, int(round(c * width)))`` (lamp.md section 11).
    ``init`` names an initialiser of :data:`harness.models.init.INITS` applied after the builder's own.
    """
    if arch not in MODELS:
        raise ValueError(f"unknown model '{arch}' (expected one of: {', '.join(sorted(MODELS))})")
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    model = MODELS[arch](num_classes=num_classes, width=width)
    if init is not None:
        if init not in INITS:
            raise ValueError(f"unknown initialiser '{init}' (expected one of: {', '.join(sorted(INITS))})")
        INITS[init](model)
    return model


def measured_cost(arch: str, width: float, classes: int, size: int = 32) -> tuple[int, int]:
    """(parameters, forward MACs per ``size`` x ``size`` image) of the built model."""
    model = build_model(arch, classes, width)
    return count_params(model), macs(model, input_shape=(3, size, size))[0]


def record_costs(models: list[tuple[str, float, int, int]]) -> dict[str, list[int]]:
    """Measure and record the sizes of ``models`` (arch, width, classes, image size) in
    :data:`harness.models.catalog.COSTS_FILE` (kept sorted)."""
    table = _costs()
    for arch, width, classes, size in models:
        table[_key(arch, width, classes, size)] = list(measured_cost(arch, width, classes, size))
    lines = [f"  {json.dumps(k)}: [{v[0]}, {v[1]}]" for k, v in sorted(table.items())]
    COSTS_FILE.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    return table
