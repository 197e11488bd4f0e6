"""Named initialisers shared by model families (OpenLTH's models/initializers.py idea)."""

from __future__ import annotations

from torch import nn


def kaiming_fan_out(model: nn.Module) -> None:
    """Conv N(0, sqrt(2 / (k^2 C_out))) (Kaiming normal, fan_out, ReLU gain); BN weight 1, bias 0;
    Linear untouched (PyTorch default). DPF's INCHEON ResNets and the author's framework (dpf.md 3)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
