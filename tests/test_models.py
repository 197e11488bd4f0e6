"""Model definitions and metrics against the derived counts of lamp.md section 4 and common.md sections 1.4 / 2.1."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.metrics import count_params, layer_macs, macs
from harness.models import MODELS, build_model

# arch: (total params, Conv2d+Linear weights, Conv2d+Linear modules, dense MACs in M to 0.1) at width 1, 10 classes.
EXPECTED = {
    "vgg16_bn_fc1_lamp": (14_728_266, 14_715_584, 14, 313.2),
    "resnet18_cifar_kuangliu": (11_173_962, 11_164_352, 21, 555.4),
    "densenet_bc_121_g12": (1_000_618, 969_288, 121, 125.3),
    "efficientnet_b0_cifar_lamp": (3_599_686, 3_550_816, 82, 30.3),
}


def prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def arch_model(request: pytest.FixtureRequest) -> tuple[str, nn.Module]:
    torch.manual_seed(0)
    return request.param, build_model(request.param)


def test_registry_keys() -> None:
    assert set(MODELS) == set(EXPECTED)


def test_exact_counts(arch_model: tuple[str, nn.Module]) -> None:
    arch, model = arch_model
    total, weights, n_layers, _ = EXPECTED[arch]
    layers = prunable(model)
    assert count_params(model) == total
    assert sum(m.weight.numel() for _, m in layers) == weights
    assert len(layers) == n_layers


def test_dense_macs(arch_model: tuple[str, nn.Module]) -> None:
    arch, model = arch_model
    dense, nonzero = macs(model)
    assert dense == nonzero
    assert round(dense / 1e6, 1) == EXPECTED[arch][3]


def test_module_order_is_forward_order(arch_model: tuple[str, nn.Module]) -> None:
    """First prunable is a 4-D conv weight, last is the classifier, and modules() order equals call order."""
    _, model = arch_model
    layers = prunable(model)
    assert isinstance(layers[0][1], nn.Conv2d) and layers[0][1].weight.dim() == 4
    assert isinstance(layers[-1][1], nn.Linear) and layers[-1][1].out_features == 10
    called: list[str] = []
    handles = [m.register_forward_hook(lambda *_, n=n: called.append(n)) for n, m in layers]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    for h in handles:
        h.remove()
    assert called == [n for n, _ in layers if n in called]


def test_forward_shapes_and_mode_restored(arch_model: tuple[str, nn.Module]) -> None:
    _, model = arch_model
    model.train()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    layer_macs(model)
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("arch", sorted(EXPECTED))
def test_width_eighth_forward(arch: str) -> None:
    model = build_model(arch, width=0.125)
    assert len(prunable(model)) == EXPECTED[arch][2]  # topology does not depend on width
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_vgg_width_eighth() -> None:
    """lamp.md section 11: widths 8,8,16,16,32,32,32,64x6, Linear(64, 10), ~232 k params, ~5.1 M MACs."""
    model = build_model("vgg16_bn_fc1_lamp", width=1 / 8)
    layers = [m for _, m in prunable(model)]
    assert [m.out_channels for m in layers[:-1]] == [8, 8, 16, 16, 32, 32, 32] + [64] * 6
    assert (layers[-1].in_features, layers[-1].out_features) == (64, 10)
    assert count_params(model) == 232_274
    assert round(macs(model)[0] / 1e6, 1) == 5.1


def test_num_classes() -> None:
    model = build_model("resnet18_cifar_kuangliu", num_classes=100, width=0.125)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 100)


def test_skipped_expansion_conv_counts_zero_macs() -> None:
    model = build_model("efficientnet_b0_cifar_lamp", width=0.125)
    per_layer = layer_macs(model)
    assert per_layer["layers.0.conv1"] == 0
    assert all(v > 0 for k, v in per_layer.items() if k != "layers.0.conv1")


def test_masked_macs_halve_one_layer() -> None:
    model = build_model("vgg16_bn_fc1_lamp", width=0.125)
    per_layer = layer_macs(model)
    weight = model.features[3].weight
    mask = torch.ones_like(weight, dtype=torch.bool)
    mask.view(-1)[: weight.numel() // 2] = False
    dense, nonzero = macs(model, {"features.3.weight": mask})
    assert dense == sum(per_layer.values())
    assert dense - nonzero == per_layer["features.3"] // 2
    assert per_layer["features.3"] % 2 == 0


def test_unknown_arch() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'vgg19' \(expected one of: .*vgg16_bn_fc1_lamp"):
        build_model("vgg19")
