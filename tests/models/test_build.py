"""Model definitions and metrics against the derived counts of lamp.md section 4 and common.md sections 1.4 / 2.1."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.metrics import count_params, layer_macs, macs
from harness.models.build import MODELS, build_model, measured_cost
from harness.models.wideresnet import WideResNet

# arch: (total params, Conv2d+Linear weights, Conv2d+Linear modules, dense MACs in M to 0.1) at width 1, 10 classes.
EXPECTED = {
    "vgg16_bn_fc1_lamp": (14_728_266, 14_715_584, 14, 313.2),
    "resnet18_cifar_kuangliu": (11_173_962, 11_164_352, 21, 555.4),
    "densenet_bc_121_g12": (1_000_618, 969_288, 121, 125.3),
    "efficientnet_b0_cifar_lamp": (3_599_686, 3_550_816, 82, 30.3),
    # DPF (dpf.md section 3): weights = the sheet's conv weights + Linear weights (64*10 / 256*10 / 64k*10 / VGG's
    # 512*512 + 512*512 + 512*10).
    "resnet20_cifar_optb": (272_474, 270_896, 22, 40.8),
    "resnet32_cifar_optb": (466_906, 464_432, 34, 69.1),
    # The sheets print 125.8 M (dpf.md 3, common.md 1.4 / 2.1); the exact count 125,747,840 (DPF_EXPECTED) rounds to
    # 125.7 -- the printed value is double rounding (125.748 -> 125.75 -> 125.8). Params match the sheet exactly.
    "resnet56_cifar_optb": (855_770, 851_504, 58, 125.7),
    "resnet56_cifar_bottleneck_lin": (869_530, 856_496, 86, 127.3),
    "wrn28_2_preact_lin": (1_467_610, 1_463_984, 29, 214.4),
    "wrn28_4_preact_lin": (5_849_050, 5_841_840, 29, 845.6),
    "wrn28_8_preact_lin": (23_354_842, 23_340_464, 29, 3360.1),
    "vgg16d_bn_fc3_lin": (15_253_578, 15_239_872, 16, 313.7),
    # PAGS / ICLR'23 (pags.md 5.2 = common.md 1.4 / 2.1): torchvision definitions on 32x32.
    "resnet34_tv_imagenet_stem": (21_289_802, 21_272_768, 37, 74.8),
    "resnet18_tv_imagenet_stem": (11_181_642, 11_172_032, 21, 37.0),
    "vgg16_bn_tv_4096fc": (134_309_962, 134_289_088, 16, 432.8),
}

# DPF models at width 1, 10 classes: (total params, conv weights = DPF's prunable set (INCHEON, dpf.md 1.5), exact
# dense MACs, the sheet's MACs in M, ReLU activation sites). Params, conv weights and the sheet's MACs are the table of
# dpf.md section 3 (= common.md 1.4 / 2.1). The exact MACs are derived analytically from the definitions of dpf.md 3.1 /
# 3.2 with conv MAC = C_out*H_out*W_out*C_in*k^2 and linear MAC = in*out (common.md 2.1); a full 3x3 conv of a stage
# costs 16^2*32^2*9 = 32^2*16^2*9 = 64^2*8^2*9 = 2,359,296 (times k^2 for WRN):
# * BasicBlock ResNet-(6n+2): stem 442,368 + fc 640 + two stride-2 first convs 2 * 1,179,648 + two 1x1 projections
#   2 * 131,072 = 3,064,448, plus (6n - 2) full convs: 3,064,448 + (6n - 2) * 2,359,296 -> n = 3 / 5 / 9.
# * Bottleneck ResNet-56 (w = 16/32/64, out 4w, stride on the 3x3): stage 1 = 262,144 + 2,359,296 + 1,048,576 +
#   1,048,576 (projection) + 8 * 4,456,448 = 40,370,176; stages 2 and 3 = 2,097,152 + 2,359,296 + 1,048,576 +
#   2,097,152 + 8 * 4,456,448 = 43,253,760 each; stem 442,368; fc 2,560 -> 127,322,624.
# * WRN-28-k: 442,368 (stem) + k * (2,359,296 + 262,144 + 640) (group-1 first conv, its 1x1 shortcut, fc)
#   + k^2 * (21 * 2,359,296 + 2 * 1,179,648 + 2 * 131,072) (21 full convs, two stride-2 first convs, two shortcuts)
#   = 442,368 + 2,622,080 k + 52,166,656 k^2.
# * VGG16-D: the 13 convs of config D sum to 313,196,544 (as LAMP's VGG-16 features); + 512*512 + 512*512 + 512*10.
# ReLU sites: ResNet 1 + 2 per block (Bottleneck: 3); WRN 2 per block + 1 in the head; VGG 13 + 2.
DPF_EXPECTED = {
    "resnet20_cifar_optb": (272_474, 270_256, 40_813_184, 40.8, 19),
    "resnet32_cifar_optb": (466_906, 463_792, 69_124_736, 69.1, 31),
    "resnet56_cifar_optb": (855_770, 850_864, 125_747_840, 125.8, 55),
    "resnet56_cifar_bottleneck_lin": (869_530, 853_936, 127_322_624, 127.3, 82),
    "wrn28_2_preact_lin": (1_467_610, 1_462_704, 214_353_152, 214.4, 25),  # the paper's own 216 M: dpf.md 2.1
    "wrn28_4_preact_lin": (5_849_050, 5_839_280, 845_597_184, 845.6, 25),
    "wrn28_8_preact_lin": (23_354_842, 23_335_344, 3_360_084_992, 3360, 25),
    "vgg16d_bn_fc3_lin": (15_253_578, 14_710_464, 313_725_952, 313.7, 15),
}
# Allowed gap to the sheet's printed MACs: half a unit of its last digit, except the double-rounded ResNet-56 value.
SHEET_MACS_TOL = {"resnet56_cifar_optb": 0.053, "wrn28_8_preact_lin": 0.5}

# PAGS models (pags.md section 5.2; common.md 1.4 / 2.1) at width 1: (params for 10 classes, params for 100 classes,
# Conv2d + Linear weights, their tensor count, exact dense MACs, the sheet's MACs in M, Linear weights = classifier
# MACs, ReLU sites). Params, weights, tensors and the sheet's MACs are the sheet's; the exact MACs are analytic:
# * ResNet-34: stem 64*16^2*3*49 = 2,408,448; stage 1 (8x8) 6 * 2,359,296; stages 2-4 (4x4, 2x2, 1x1) each a stride-2
#   first conv 1,179,648 + a 1x1 downsample 131,072 + (2n - 1) full convs of 2,359,296 (n = 4 / 6 / 3); fc 5,120
#   -> 74,765,312. ReLU sites 1 + 2 * 16 = 33.
# * VGG-16-BN: the 13 convs of config D 313,196,544 (as LAMP's VGG-16) + classifier 25088*4096 + 4096*4096 + 4096*10
#   = 119,578,624 (the Linear MACs equal the Linear weights: every Linear runs once per image) -> 432,775,168.
#   ReLU sites 13 + 2 = 15.
# * ResNet-18 (the PAGS paper's second backbone, pags.md 1.1; torchvision's resnet18, 11,181,642 params): stem
#   2,408,448; stage 1 4 * 2,359,296; stages 2-4 each 1,179,648 + 131,072 + 3 * 2,359,296 = 8,388,608; fc 5,120
#   -> 37,016,576. ReLU sites 1 + 2 * 8 = 17. (No sheet value: the exact count is the "sheet" column, 37.0.)
# 100 classes add 90 * (512 + 1) = 46,170 (ResNets) and 90 * (4096 + 1) = 368,730 (VGG) parameters.
PAGS_EXPECTED = {
    "resnet34_tv_imagenet_stem": (21_289_802, 21_335_972, 21_272_768, 37, 74_765_312, 74.8, 5_120, 33),
    "resnet18_tv_imagenet_stem": (11_181_642, 11_227_812, 11_172_032, 21, 37_016_576, 37.0, 5_120, 17),
    "vgg16_bn_tv_4096fc": (134_309_962, 134_678_692, 134_289_088, 16, 432_775_168, 432.8, 119_578_624, 15),
}
TORCHVISION_REFERENCE = {"resnet34_tv_imagenet_stem": "resnet34", "resnet18_tv_imagenet_stem": "resnet18",
                         "vgg16_bn_tv_4096fc": "vgg16_bn"}
# Activation sites of every model whose ReLUs are all their own nn.ReLU module (the LAMP models use F.relu / shared
# in-place modules as their reference code does and are not listed).
# ReLU sites per forward pass (EfficientNet-B0 uses swish: no ReLU site, no dead-neuron rate).
LAMP_RELU_SITES = {"vgg16_bn_fc1_lamp": 13, "resnet18_cifar_kuangliu": 17,
                   "densenet_bc_121_g12": 2 * (6 + 12 + 24 + 16) + 3 + 1}
RELU_SITES = ({arch: v[4] for arch, v in DPF_EXPECTED.items()} | {arch: v[7] for arch, v in PAGS_EXPECTED.items()}
              | LAMP_RELU_SITES)


def prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def arch_model(request: pytest.FixtureRequest) -> tuple[str, nn.Module]:
    torch.manual_seed(0)
    return request.param, build_model(request.param)


# The ImageNet-scale and zoo models (issue: every table of the papers): parameter counts at torchvision's published
# ImageNet figures (1000 classes; its model docs), and Conv-6 by hand at 10 classes: convs 3-64-64, 64-128-128,
# 128-256-256 with bias = 1,792 + 36,928 + 73,856 + 147,584 + 295,168 + 590,080, FC 4096-256-256-10 with bias =
# 1,048,832 + 65,792 + 2,570 -> 2,262,602. (classes, input size, params, forward GMACs as torchvision publishes them)
ZOO_EXPECTED = {
    "resnet50_tv": (1000, 224, 25_557_032, 4.09),
    "vit_b16_tv": (1000, 224, 86_567_656, 17.56),
    "densenet121_tv": (1000, 224, 7_978_856, 2.83),
    "mobilenet_v2_tv": (1000, 224, 3_504_872, 0.30),
    "vgg19_bn_tv_4096fc": (1000, 224, 143_678_248, 19.63),
    "conv6_frankle": (10, 32, 2_262_602, None),
}


def test_registry_keys() -> None:
    assert set(MODELS) == set(EXPECTED) | set(ZOO_EXPECTED)
    assert not set(EXPECTED) & set(ZOO_EXPECTED)


@pytest.mark.parametrize("arch", sorted(ZOO_EXPECTED))
def test_zoo_models_have_the_published_sizes(arch: str) -> None:
    classes, size, params, gmacs = ZOO_EXPECTED[arch]
    got_params, got_macs = measured_cost(arch, 1.0, classes, size)
    assert got_params == params
    if gmacs is not None:  # torchvision's GFLOPS column counts multiply-adds of convs and linears (its own MHA too)
        assert got_macs / 1e9 == pytest.approx(gmacs, abs=0.01)


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


# ---- DPF models (dpf.md section 3) ----


@pytest.fixture(scope="module", params=sorted(DPF_EXPECTED))
def dpf_model(request: pytest.FixtureRequest) -> tuple[str, nn.Module]:
    torch.manual_seed(0)
    return request.param, build_model(request.param)


def test_dpf_exact_counts(dpf_model: tuple[str, nn.Module]) -> None:
    arch, model = dpf_model
    total, conv_weights, exact_macs, sheet_macs, _ = DPF_EXPECTED[arch]
    assert count_params(model) == total
    assert sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d)) == conv_weights
    dense, nonzero = macs(model)
    assert dense == nonzero == exact_macs
    assert abs(dense / 1e6 - sheet_macs) <= SHEET_MACS_TOL.get(arch, 0.05)


def _relu_sites(model: nn.Module, x: torch.Tensor) -> tuple[int, dict[str, int], torch.Tensor]:
    """Run one forward in the model's current mode; return (relu calls of any kind, per-``nn.ReLU``-module hook
    firings, output)."""
    from torch.overrides import TorchFunctionMode

    relu_fns = {torch.relu, torch.relu_, F.relu, F.relu_, torch.Tensor.relu, torch.Tensor.relu_}

    class CountRelu(TorchFunctionMode):
        calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            # The mode is off while func runs, so F.relu -> torch.relu counts once.
            if func in relu_fns:
                CountRelu.calls += 1
            return func(*args, **(kwargs or {}))

    fired: dict[str, int] = {}
    handles = []
    for name, m in model.named_modules(remove_duplicate=False):
        if isinstance(m, nn.ReLU):
            fired[name] = 0
            handles.append(m.register_forward_hook(lambda *_, n=name: fired.__setitem__(n, fired[n] + 1)))
    try:
        with torch.no_grad(), CountRelu():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    return CountRelu.calls, fired, out


@pytest.mark.parametrize("arch_model", sorted(RELU_SITES), indirect=True)
def test_every_relu_site_is_its_own_module(arch_model: tuple[str, nn.Module]) -> None:
    """Every activation of the forward pass is an nn.ReLU module call, each module firing exactly once (DPF and PAGS
    models at width 1; torchvision's BasicBlock would fire its one shared ReLU module twice)."""
    arch, model = arch_model
    model.eval()
    calls, fired, _ = _relu_sites(model, torch.randn(1, 3, 32, 32))
    assert calls == len(fired) == RELU_SITES[arch]
    assert set(fired.values()) == {1}
    assert all(not m.inplace for m in model.modules() if isinstance(m, nn.ReLU))


def test_relu_site_counter_sees_functional_relu() -> None:
    """The counter of the test above catches functional calls, which module hooks would miss."""

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 32 * 32, 4)

        def forward(self, x):
            return nn.functional.relu(self.fc(x.flatten(1)))

    calls, fired, _ = _relu_sites(Functional(), torch.zeros(1, 3, 32, 32))
    assert (calls, len(fired)) == (1, 0)


@pytest.mark.parametrize("arch", sorted(DPF_EXPECTED))
def test_dpf_width_quarter_forward(arch: str) -> None:
    model = build_model(arch, width=0.25)
    assert len(prunable(model)) == EXPECTED[arch][2]
    model.train()
    calls, fired, out = _relu_sites(model, torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and bool(torch.isfinite(out).all())
    assert calls == len(fired) == DPF_EXPECTED[arch][4] and set(fired.values()) == {1}


def test_resnet20_width_quarter_ci_counts() -> None:
    """dpf.md section 9: channels 4 / 8 / 16, 17.5 k params, 2.6 M MACs (exact: 17,534 and 2,633,888)."""
    model = build_model("resnet20_cifar_optb", width=0.25)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sorted({m.out_channels for m in convs}) == [4, 8, 16]
    assert model.fc.in_features == 16
    assert count_params(model) == 17_534
    assert macs(model)[0] == 2_633_888


def test_dpf_shortcuts() -> None:
    """Projections: INCHEON at the first block of stages 2-3 (conv + BN); the framework's Bottleneck at every stage;
    WRN-28-k at the first block of each group, a bare 1x1 conv (dpf.md 3.1 / 3.2)."""
    def projections(model: nn.Module) -> list[str]:
        return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
                and n.endswith("shortcut" if isinstance(model, WideResNet) else "shortcut.0")]

    assert projections(build_model("resnet56_cifar_optb", width=0.25)) == ["layer2.0.shortcut.0", "layer3.0.shortcut.0"]
    assert projections(build_model("resnet56_cifar_bottleneck_lin", width=0.25)) == [
        "layer1.0.shortcut.0", "layer2.0.shortcut.0", "layer3.0.shortcut.0"]
    assert projections(build_model("wrn28_2_preact_lin", width=0.25)) == [
        "block1.0.shortcut", "block2.0.shortcut", "block3.0.shortcut"]
    wrn = build_model("wrn28_2_preact_lin", width=0.25)
    assert not any(isinstance(m, nn.Dropout) for m in wrn.modules())  # --drop_rate default 0.0 (dpf.md 3.2)
    vgg = build_model("vgg16d_bn_fc3_lin", width=0.25)
    assert [type(m).__name__ for m in vgg.classifier] == ["Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU",
                                                         "Linear"]
    assert all(m.p == 0.5 for m in vgg.classifier if isinstance(m, nn.Dropout))


def test_dpf_init(dpf_model: tuple[str, nn.Module]) -> None:
    """dpf.md 3.1 / 3.2: conv N(0, sqrt(2 / (k^2 C_out))); BN 1 / 0; Linear weight PyTorch default; WRN Linear bias 0;
    VGG conv biases keep PyTorch's default uniform init."""
    arch, model = dpf_model
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            std = (2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)) ** 0.5
            assert abs(float(m.weight.detach().std()) / std - 1) < 0.2
            if m.bias is not None:
                bound = (m.in_channels * m.kernel_size[0] * m.kernel_size[1]) ** -0.5
                assert 0 < float(m.bias.detach().abs().max()) <= bound
        elif isinstance(m, nn.BatchNorm2d):
            assert bool((m.weight == 1).all()) and bool((m.bias == 0).all())
        elif isinstance(m, nn.Linear):
            bound = m.in_features**-0.5
            assert float(m.weight.detach().abs().max()) <= bound
            assert (float(m.bias.detach().abs().max()) == 0) == arch.startswith("wrn")
    conv_bias = [m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(conv_bias) if arch.startswith("vgg") else not any(conv_bias)


# ---- PAGS models (pags.md section 5.2): torchvision ImageNet definitions on 32x32, the ICLR'23 init ----


def _torchvision_reference(arch: str, num_classes: int = 10) -> nn.Module:
    """torchvision's model on the meta device: shapes only, nothing allocated or initialised."""
    import torchvision

    with torch.device("meta"):
        return getattr(torchvision.models, TORCHVISION_REFERENCE[arch])(num_classes=num_classes)


@pytest.mark.parametrize("arch_model", sorted(PAGS_EXPECTED), indirect=True)
def test_pags_exact_counts(arch_model: tuple[str, nn.Module]) -> None:
    arch, model = arch_model
    total, total_100, weights, n_tensors, exact_macs, sheet_macs, linear, _ = PAGS_EXPECTED[arch]
    layers = prunable(model)
    assert count_params(model) == total
    assert sum(m.weight.numel() for _, m in layers) == weights and len(layers) == n_tensors
    assert sum(m.weight.numel() for _, m in layers if isinstance(m, nn.Linear)) == linear
    per_layer = layer_macs(model)
    assert sum(per_layer.values()) == exact_macs and round(exact_macs / 1e6, 1) == sheet_macs
    assert sum(v for n, v in per_layer.items() if isinstance(model.get_submodule(n), nn.Linear)) == linear
    with torch.device("meta"):  # 100 classes: counts only, no allocation
        assert count_params(build_model(arch, num_classes=100)) == total_100
    assert count_params(_torchvision_reference(arch, 100)) == total_100


def test_vgg16_tv_classifier_share() -> None:
    """pags.md 5.2: 119,578,624 of the 134,289,088 prunable weights (89 %) and 119.6 M MACs are in the classifier."""
    linear, weights = PAGS_EXPECTED["vgg16_bn_tv_4096fc"][6], PAGS_EXPECTED["vgg16_bn_tv_4096fc"][2]
    assert round(100 * linear / weights) == 89 and round(linear / 1e6, 1) == 119.6
    assert 25088 * 4096 + 4096 * 4096 + 4096 * 10 == linear


@pytest.mark.parametrize("arch_model", sorted(PAGS_EXPECTED), indirect=True)
def test_pags_structure_equals_torchvision(arch_model: tuple[str, nn.Module]) -> None:
    """Module for module torchvision's definition at width 1: same parameter and buffer names and shapes in the same
    order, same non-ReLU modules, and with torchvision's module holding our tensors the same eval-mode output."""
    arch, model = arch_model
    ref = _torchvision_reference(arch)
    assert [(n, p.shape) for n, p in model.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
    assert [(n, b.shape) for n, b in model.named_buffers()] == [(n, b.shape) for n, b in ref.named_buffers()]

    def modules(m: nn.Module) -> list[tuple[str, type]]:
        return [(n, type(x)) for n, x in m.named_modules() if n and not isinstance(x, (nn.ReLU, nn.Sequential))
                and type(x).__module__.startswith("torch.nn")]

    assert modules(model) == modules(ref)
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == PAGS_EXPECTED[arch][7]
    ref.load_state_dict(model.state_dict(), assign=True)  # shares our tensors; strict
    model.eval()
    ref.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["resnet34_tv_imagenet_stem", "resnet18_tv_imagenet_stem"])
def test_resnet_tv_default_init_is_torchvision(arch: str) -> None:
    """Same construction order and init as torchvision: from the same seed the initial weights are bit-identical."""
    import torchvision

    torch.manual_seed(3)
    ours = build_model(arch).state_dict()
    torch.manual_seed(3)
    ref = getattr(torchvision.models, TORCHVISION_REFERENCE[arch])(num_classes=10).state_dict()
    assert list(ours) == list(ref)
    assert all(torch.equal(ours[k], ref[k]) for k in ref)


@pytest.mark.parametrize("arch_model", ["vgg16_bn_tv_4096fc"], indirect=True)
def test_vgg16_tv_default_init(arch_model: tuple[str, nn.Module]) -> None:
    """torchvision's VGG init: conv bias 0, BN 1 / 0, Linear N(0, 0.01) with bias 0."""
    _, model = arch_model
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            assert bool((m.bias == 0).all())
        elif isinstance(m, nn.BatchNorm2d):
            assert bool((m.weight == 1).all()) and bool((m.bias == 0).all())
        elif isinstance(m, nn.Linear):
            assert bool((m.bias == 0).all())
    assert abs(float(model.classifier[0].weight.detach().std()) / 0.01 - 1) < 0.01


@pytest.mark.parametrize("arch", sorted(PAGS_EXPECTED))
def test_pags_width_quarter_forward(arch: str) -> None:
    model = build_model(arch, width=0.25)
    assert len(prunable(model)) == PAGS_EXPECTED[arch][3]
    model.train()
    calls, fired, out = _relu_sites(model, torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and bool(torch.isfinite(out).all())
    assert calls == len(fired) == RELU_SITES[arch] and set(fired.values()) == {1}
    assert all(not m.inplace for m in model.modules() if isinstance(m, nn.ReLU))


def test_resnet34_tv_width_quarter_ci_counts() -> None:
    """pags.md section 10: widths 16 / 32 / 64 / 128, printed as 1.34 M params and 5.1 M MACs (derived); exact:
    1,336,538 params (1,348,148 for 100 classes), 1,332,272 Conv2d + Linear weights, 5,125,376 MACs."""
    model = build_model("resnet34_tv_imagenet_stem", width=0.25)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].out_channels == 16 and sorted({m.out_channels for m in convs}) == [16, 32, 64, 128]
    assert model.fc.in_features == 128
    assert count_params(model) == 1_336_538 and round(count_params(model) / 1e6, 2) == 1.34
    assert sum(m.weight.numel() for _, m in prunable(model)) == 1_332_272
    assert macs(model)[0] == 5_125_376 and round(macs(model)[0] / 1e6, 1) == 5.1
    assert count_params(build_model("resnet34_tv_imagenet_stem", num_classes=100, width=0.25)) == 1_348_148


def test_vgg16_tv_width_quarter_counts() -> None:
    """``width`` scales the conv channels and the 4096 hidden width; the classifier input is the last conv width * 49."""
    model = build_model("vgg16_bn_tv_4096fc", width=0.25)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [16, 16, 32, 32, 64, 64, 64] + [128] * 6
    fcs = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in fcs] == [(128 * 7 * 7, 1024), (1024, 1024), (1024, 10)]
    assert model.avgpool.output_size == (7, 7)
    assert [m.p for m in model.classifier if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    assert count_params(model) == 8_406_298
    assert macs(model)[0] == 27_387_904


def _assert_iclr23(model: nn.Module, tol: float) -> None:
    """pags.md 5.2: conv N(0, sqrt(2 / (k^2 C_out))) and bias 0; BN weight exactly 0.5, bias 0; Linear N(0, 0.01), 0."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            std = (2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)) ** 0.5
            w = m.weight.detach()
            assert abs(float(w.std()) / std - 1) < tol, name
            assert abs(float(w.mean())) < tol * std, name
            assert m.bias is None or bool((m.bias == 0).all()), name
        elif isinstance(m, nn.BatchNorm2d):
            assert bool((m.weight == 0.5).all()) and bool((m.bias == 0).all()), name
            assert bool((m.running_mean == 0).all()) and bool((m.running_var == 1).all()), name
        elif isinstance(m, nn.Linear):
            assert abs(float(m.weight.detach().std()) / 0.01 - 1) < tol, name
            assert bool((m.bias == 0).all()), name


def test_iclr23_init_resnet34() -> None:
    torch.manual_seed(0)
    model = build_model("resnet34_tv_imagenet_stem", init="iclr23")
    # Every conv has >= 8,192 entries and the fc 5,120: a 5 % bound is > 6 standard errors of the sample std.
    _assert_iclr23(model, tol=0.05)
    big = model.layer4[1].conv2.weight  # 512 x 512 x 3 x 3 = 2,359,296 entries
    assert abs(float(big.detach().std()) - (2 / (9 * 512)) ** 0.5) < 2e-3 * (2 / (9 * 512)) ** 0.5
    assert not any(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d))


def test_iclr23_init_vgg16_quarter() -> None:
    torch.manual_seed(0)
    model = build_model("vgg16_bn_tv_4096fc", width=0.25, init="iclr23")
    # The smallest tensors: the first conv (16 * 3 * 9 = 432 entries) and the last Linear (10 * 1024).
    _assert_iclr23(model, tol=0.2)
    assert all(m.bias is not None and bool((m.bias == 0).all()) for m in model.modules() if isinstance(m, nn.Conv2d))
    assert abs(float(model.classifier[0].weight.detach().std()) / 0.01 - 1) < 0.005  # 6.4 M entries


def test_iclr23_matches_reference_draw_order() -> None:
    """The reference seeds and then runs its init over torchvision's ``modules()``; ours visits the same tensors in the
    same order, so from the same seed the iclr23 weights equal those of torchvision's ResNet-34 given the same rule."""
    import torchvision

    from harness.models.init import INITS

    ours = build_model("resnet34_tv_imagenet_stem")
    ref = torchvision.models.resnet34(num_classes=10)
    torch.manual_seed(69)
    INITS["iclr23"](ours)
    torch.manual_seed(69)
    INITS["iclr23"](ref)
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), ref.state_dict().values(), strict=True))


def test_unknown_init() -> None:
    with pytest.raises(ValueError, match=r"unknown initialiser 'nope' \(expected one of: .*iclr23"):
        build_model("resnet20_cifar_optb", width=0.25, init="nope")
