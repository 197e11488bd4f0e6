"""The model catalog (torch-free): every architecture and initialiser name a manifest may use, and the size of
each (architecture, width, classes) the shipped manifests build, so that validating a manifest and planning a grid
never load torch. :mod:`harness.models.build` has the builders; a test checks both name the same models and that
every size recorded here is the built model's (``python -m harness.models.build --costs`` records them).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["ARCHS", "INITS", "COSTS_FILE", "model_cost"]

# architecture -> what it is (common.md section 1.4: unambiguous keys)
ARCHS: dict[str, str] = {
    "vgg16_bn_fc1_lamp": "LAMP's VGG-16: conv bias + BN, one Linear(512, n)",
    "resnet18_cifar_kuangliu": "LAMP's ResNet-18: CIFAR stem (3x3, no max-pool)",
    "densenet_bc_121_g12": "LAMP's DenseNet-121: BC, growth 12",
    "efficientnet_b0_cifar_lamp": "LAMP's EfficientNet-B0: CIFAR variant",
    "resnet20_cifar_optb": "ResNet-20, BasicBlock, option-B shortcuts (DPF's INCHEON; AP)",
    "resnet32_cifar_optb": "ResNet-32, BasicBlock, option-B shortcuts (INCHEON)",
    "resnet56_cifar_optb": "ResNet-56, BasicBlock, option-B shortcuts (INCHEON)",
    "resnet56_cifar_bottleneck_lin": "ResNet-56, Bottleneck (the DPF author's framework)",
    "wrn28_2_preact_lin": "WideResNet-28-2, pre-activation (the DPF author's framework)",
    "wrn28_4_preact_lin": "WideResNet-28-4, pre-activation",
    "wrn28_8_preact_lin": "WideResNet-28-8, pre-activation",
    "vgg16d_bn_fc3_lin": "VGG16-D with BN, classifier 512-512-n (the DPF author's framework)",
    "resnet34_tv_imagenet_stem": "torchvision ResNet-34 (ImageNet stem) on 32x32 (PAGS / ICLR'23)",
    "resnet18_tv_imagenet_stem": "torchvision ResNet-18 (ImageNet stem) on 32x32 (PAGS)",
    "vgg16_bn_tv_4096fc": "torchvision VGG-16-BN with the 4096-wide classifier (ICLR'23)",
    "resnet50_tv": "torchvision ResNet-50 (V1.5, ImageNet stem) for 224x224 (DPF Table 2, AP ImageNet)",
    "vgg19_bn_tv_4096fc": "torchvision VGG-19-BN with the 4096-wide classifier (AP's CIFAR-100 VGG)",
    "densenet121_tv": "torchvision DenseNet-121, growth 32, ImageNet stem (AP's DenseNet)",
    "mobilenet_v2_tv": "torchvision MobileNetV2 (AP's MobileNet)",
    "vit_b16_tv": "torchvision ViT-B/16, 224 px (AP's vision transformer)",
    "conv6_frankle": "Conv-6 of Frankle & Carbin 2019 (LAMP's Conv-6 row), 32x32",
}

# initialiser -> what it does (applied after the builder's own)
INITS: dict[str, str] = {
    "kaiming_fan_out": "conv N(0, sqrt(2 / (k^2 C_out))), BN 1 / 0 (DPF)",
    "iclr23": "the ICLR'23 predecessor's init: conv N(0, sqrt(2 / (k^2 C_out))), BN gamma 0.5, Linear N(0, 0.01)",
    "ap_xavier": "AP's training-script re-init: xavier-normal conv/linear, BN gamma N(1, 0.02), linear bias N(0, 1)",
}

COSTS_FILE = Path(__file__).resolve().parent / "costs.json"


def _key(arch: str, width: float, classes: int, size: int = 32) -> str:
    return f"{arch}|{float(width)!r}|{int(classes)}" + ("" if size == 32 else f"|{int(size)}")


def _costs() -> dict[str, list[int]]:
    return json.loads(COSTS_FILE.read_text()) if COSTS_FILE.is_file() else {}


def model_cost(arch: str, width: float, classes: int, size: int = 32) -> tuple[int, int] | None:
    """(parameters, forward MACs per ``size`` x ``size`` image) as recorded, or None for a size not recorded."""
    v = _costs().get(_key(arch, width, classes, size))
    return (int(v[0]), int(v[1])) if v else None
