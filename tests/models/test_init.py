"""harness/models/init.py: AP's re-initialisation (ap_xavier)."""

from __future__ import annotations

import math
import pytest
import torch
from torch import nn
from harness.models.build import build_model
from harness.pruning.masks import MaskSet


def test_ap_xavier_init():
    torch.manual_seed(0)
    m = build_model("resnet20_cifar_optb", 10, 1.0, "ap_xavier")
    assert sum(p.numel() for p in m.parameters()) == 272474
    gammas = torch.cat([b.weight.detach() for b in m.modules() if isinstance(b, nn.BatchNorm2d)])
    assert gammas.numel() == 784 and abs(float(gammas.mean()) - 1) < 0.01 and 0.01 < float(gammas.std()) < 0.03
    assert all(float(b.bias.detach().abs().max()) == 0 for b in m.modules() if isinstance(b, nn.BatchNorm2d))
    assert 0.5 < float(m.fc.bias.detach().std()) < 1.8  # N(0, 1), 10 draws
    conv = m.layer3[0].conv1.weight  # xavier normal: std sqrt(2 / (fan_in + fan_out))
    assert float(conv.detach().std()) == pytest.approx(math.sqrt(2 / (32 * 9 + 64 * 9)), rel=0.1)
    assert len(MaskSet.for_model(m, "all_weights").params) == 43  # ap.md 4.1: 43 maskable tensors, 271,680 entries
    assert sum(p.numel() for p in MaskSet.for_model(m, "all_weights").params.values()) == 271680
