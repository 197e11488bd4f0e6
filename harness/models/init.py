"""Named initialisers shared by model families (OpenLTH's models/initializers.py idea)."""

from __future__ import annotations

import math

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


def iclr23(model: nn.Module) -> None:
    """The ICLR'23 predecessor's custom init that PAGS inherits (pags.md 5.2; common.md 1.3; ``common_models/utils.py``
    ``init`` of ``VITA-Group/ramanujan-on-pai``): conv weight N(0, sqrt(2 / (k_h k_w C_out))), conv bias 0; BN weight
    0.5, bias 0; Linear weight N(0, 0.01) (0.01 is the standard deviation, ``normal_(0, 0.01)``), bias 0.

    Applied over ``model.modules()`` in registration order, drawing from the global torch RNG; as in the reference only
    ``BatchNorm2d`` is touched. The reference's per-seed weight cache and mid-way reseed (pags.md 5.2, defect 10) are
    the caller's business: seed the RNG before calling this.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 0.5)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def ap_xavier(model: nn.Module) -> None:
    """AP's training-script re-init (ap.md 4.1; ``resnet_20.py`` ``weight_init``), which overwrites the constructor's:
    Conv2d weight ``xavier_normal_`` (bias 0 if any); BatchNorm weight (gamma) N(1, 0.02) (0.02 the standard
    deviation), bias (beta) 0; Linear weight ``xavier_normal_``, bias N(0, 1). Over ``model.modules()`` in
    registration order, from the global torch RNG (seed it before calling)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.normal_(m.bias, 0.0, 1.0)


INITS = {"kaiming_fan_out": kaiming_fan_out, "iclr23": iclr23, "ap_xavier": ap_xavier}
