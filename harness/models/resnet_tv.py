"""torchvision's ImageNet ResNet-34 (and ResNet-18) used unchanged on 32x32 inputs: the ICLR'23 predecessor setup of PAGS
(pags.md section 5.2, defect 5 of section 8; common.md sections 1.4 and 2.1).

``resnet34_tv_imagenet_stem``: stem Conv 7x7 / 2, pad 3 (3 -> 64, no bias) - BN - ReLU - MaxPool 3x3 / 2, pad 1
(32 -> 16 -> 8); BasicBlocks [3, 4, 6, 3] with widths 64 / 128 / 256 / 512 and first-block strides 1 / 2 / 2 / 2
(8 -> 8 -> 4 -> 2 -> 1x1); downsample = 1x1 conv (stride 2, no bias) + BN at the first block of stages 2-4;
AdaptiveAvgPool(1) - Linear(512, n). At width 1: 21,289,802 params (10 classes; 21,335,972 for 100), 21,272,768
Conv2d + Linear weights in 37 tensors, 74,765,312 MACs per 32x32 image (the sheet's 74.8 M). At width 1/4
(16 / 32 / 64 / 128; pags.md section 10, printed there as 1.34 M params and 5.1 M MACs): 1,336,538 params
(1,348,148 for 100 classes), 1,332,272 Conv2d + Linear weights and 5,125,376 MACs.

Structure: module names, parameter and buffer shapes and their order equal ``torchvision.models.resnet34(num_classes)``
at width 1, and so does the order in which modules are constructed (each stage's downsample before its first block),
so a torchvision ``state_dict`` loads strictly and, from the same RNG state, the initial weights are bit-identical.
The one difference: torchvision's BasicBlock calls one ``nn.ReLU(inplace=True)`` twice; here every ReLU site is its
own ``nn.ReLU`` module (stem ``relu``; ``relu1`` / ``relu2`` in every block; ``inplace=False``), 33 sites, so forward
hooks see every activation and a hook's captured output is not overwritten later in the forward pass.

Initialisation: torchvision's default -- every conv ``kaiming_normal_(mode='fan_out', nonlinearity='relu')``, BN weight
1 and bias 0, the Linear at PyTorch's default, ``zero_init_residual=False``. The ICLR'23 runs override it with the
custom initialiser ``iclr23`` of :mod:`harness.models.init` (manifest ``init: iclr23``; pags.md 5.2).

``width`` scales every channel count with ``scaled_width`` (stem and all four stages; the Linear input follows the last
stage); which blocks get a downsample is decided on the base widths, so the module set does not depend on ``width``.
"""

from __future__ import annotations

import torch
from torch import nn

from .vgg import scaled_width

RESNET34_BLOCKS = (3, 4, 6, 3)
RESNET18_BLOCKS = (2, 2, 2, 2)
RESNET34_WIDTHS = (64, 128, 256, 512)


def torchvision_resnet_init(model: nn.Module) -> None:
    """torchvision ``ResNet.__init__``'s init: conv Kaiming-normal fan_out / relu; BN 1 / 0; Linear untouched."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


class BasicBlockTV(nn.Module):
    """torchvision's BasicBlock (conv3x3(s)-BN-ReLU-conv3x3-BN, + identity or downsample, ReLU) with two ReLU modules.

    Registration order (conv1, bn1, relu1, conv2, bn2, relu2, downsample) keeps the parameter order of torchvision.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)  # called after bn2, as in torchvision
        return self.relu2(out + identity)


class BottleneckTV(nn.Module):
    """torchvision's Bottleneck (ResNet V1.5: the stride on the 3x3 conv): conv1x1-BN-ReLU-conv3x3(s)-BN-ReLU-
    conv1x1(4x)-BN, + identity or downsample, ReLU; three ReLU modules."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu3 = nn.ReLU()
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu3(out + identity)


class ResNetTV(nn.Module):
    """torchvision's ImageNet ResNet (BasicBlock, or Bottleneck for ResNet-50) with a width multiplier; see the module
    docstring."""

    def __init__(
        self,
        blocks: tuple[int, ...] = RESNET34_BLOCKS,
        num_classes: int = 10,
        width: float = 1.0,
        block: type[nn.Module] = BasicBlockTV,
    ) -> None:
        super().__init__()
        base_in = 64
        self.inplanes = scaled_width(base_in, width)
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages: list[nn.Sequential] = []
        for i, (n, base_planes) in enumerate(zip(blocks, RESNET34_WIDTHS)):
            stride = 1 if i == 0 else 2
            planes = scaled_width(base_planes, width)
            downsample = None
            # torchvision builds the downsample before the first block (``_make_layer``): same RNG consumption order.
            out = planes * block.expansion
            if stride != 1 or base_in != base_planes * block.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, out, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(out),
                )
            layers: list[nn.Module] = [block(self.inplanes, planes, stride, downsample)]
            self.inplanes, base_in = out, base_planes * block.expansion
            layers += [block(out, planes) for _ in range(1, n)]
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.inplanes, num_classes)
        torchvision_resnet_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet34_tv_imagenet_stem(num_classes: int = 10, width: float = 1.0) -> ResNetTV:
    """torchvision ResNet-34 (ImageNet stem) on 32x32 (pags.md 5.2): 21,289,802 params, 74.8 M MACs; torchvision init."""
    return ResNetTV(RESNET34_BLOCKS, num_classes=num_classes, width=width)


def resnet18_tv_imagenet_stem(num_classes: int = 10, width: float = 1.0) -> ResNetTV:
    """torchvision ResNet-18 (ImageNet stem) on 32x32: the PAGS paper's other backbone (its seed: "ResNet18 and
    ResNet34"), built like the ResNet-34 above (the predecessor's code uses torchvision's ImageNet definitions
    unchanged, pags.md 1.1 / 5.2): 11,181,642 params (10 classes), 11,172,032 Conv2d + Linear weights in 21 tensors,
    37,016,576 MACs per 32x32 image; torchvision init."""
    return ResNetTV(RESNET18_BLOCKS, num_classes=num_classes, width=width)


RESNET50_BLOCKS = (3, 4, 6, 3)


def resnet50_tv(num_classes: int = 1000, width: float = 1.0) -> ResNetTV:
    """torchvision ResNet-50 (V1.5, ImageNet stem) for 224x224: the ImageNet model of DPF's Table 2 (INCHEON's
    resnet_mask.py, a torchvision layout) and of AP's ImageNet rows: 25,557,032 params at 1000 classes; torchvision's
    Kaiming fan_out init, ``zero_init_residual=False``; every ReLU site its own module (49)."""
    return ResNetTV(RESNET50_BLOCKS, num_classes=num_classes, width=width, block=BottleneckTV)
