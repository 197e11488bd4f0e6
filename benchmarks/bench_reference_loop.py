"""Side by side: the papers' reference training loop against the project's, same model, batch
and device, trials alternating in one process (issue "Training speed", item 1).

The reference way (LAMP's released code and its kind): a torchvision-style dataset that turns each
uint8 image into a PIL image, ``RandomCrop(32, 4) + RandomHorizontalFlip + ToTensor + Normalize``
per item, a ``DataLoader`` with worker processes, and ``torch.nn.utils.prune`` re-parametrisation
hooks on every prunable layer (the mask multiplies the weight in every forward). The project's
way: uint8 data on the device, batched crop and flip per epoch, masks re-applied after each step
with one fused multiply (``MaskedHook``). Both prune half the weights (global magnitude) and train
with the model's paper optimizer; synthetic CIFAR-shaped images, so no dataset is needed.

    python benchmarks/bench_reference_loop.py [--device cuda] [--steps 20] [--trials 3] [--width 1.0]

Run by hand or ``make bench``, never by ``make test``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.data.device import DeviceData  # noqa: E402
from harness.models.build import build_model  # noqa: E402
from harness.pruning.masks import MaskSet  # noqa: E402
from harness.pruning.updates import MaskedHook  # noqa: E402
from harness.train import train  # noqa: E402

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
# (label, arch, batch, reference loader workers, optimizer) — the papers' settings
CASES = [
    ("VGG-16 (LAMP)", "vgg16_bn_fc1_lamp", 100, 2, "adamw"),
    ("ResNet-18 (LAMP)", "resnet18_cifar_kuangliu", 100, 2, "adamw"),
    ("ResNet-20 (AP)", "resnet20_cifar_optb", 64, 2, "sgd"),
    ("ResNet-20 (DPF)", "resnet20_cifar_optb", 128, 2, "sgd"),
]


class _PILDataset(torch.utils.data.Dataset):
    """CIFAR10-style: uint8 HWC array -> PIL image -> transforms, one item at a time."""

    def __init__(self, x_hwc, y, transform):
        self.x, self.y, self.transform = x_hwc, y, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def _optimizer(name: str, params):
    if name == "adamw":
        return torch.optim.AdamW(params, lr=3e-4, weight_decay=0.01)
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)


def _reference_trial(arch, width, batch, workers, opt_name, x_hwc, y, steps, device) -> float:
    from torch.nn.utils import prune
    from torchvision import transforms

    tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    loader = torch.utils.data.DataLoader(_PILDataset(x_hwc, y, tf), batch_size=batch, shuffle=True,
                                         num_workers=workers, drop_last=True, persistent_workers=False)
    torch.manual_seed(0)
    model = build_model(arch, 10, width).to(device)
    layers = [(m, "weight") for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=0.5)
    opt = _optimizer(opt_name, model.parameters())
    model.train()
    it = iter(loader)
    xb, yb = next(it)  # workers started, first batch ready: not timed
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        try:
            xb, yb = next(it)
        except StopIteration:
            it = iter(loader)
            xb, yb = next(it)
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t)


def _project_trial(arch, width, batch, opt_name, data: DeviceData, steps, device) -> float:
    torch.manual_seed(0)
    model = build_model(arch, 10, width).to(device)
    masks = MaskSet.for_model(model, "conv_and_linear_weights")
    masks.prune_("magnitude", "global", 0.5)
    opt = _optimizer(opt_name, model.parameters())
    kw = dict(optimizer=opt, scheduler=None, batch_size=batch, drop_last=True, hooks=MaskedHook(masks))
    train(model, data, steps=2, seed=0, **kw)  # warm-up: not timed
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    train(model, data, steps=steps, seed=1, **kw)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per trial (default 100 on CUDA, 8 on the CPU)")
    ap.add_argument("--trials", type=int, default=3, help="alternating trials per side")
    ap.add_argument("--width", type=float, default=None, help="width multiplier (default 1 on CUDA, 1/8 on the CPU)")
    ap.add_argument("--n", type=int, default=5000, help="synthetic training images")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    steps = args.steps or (100 if device.type == "cuda" else 8)
    width = args.width or (1.0 if device.type == "cuda" else 0.125)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (args.n,), generator=g)
    x_hwc = x.permute(0, 2, 3, 1).contiguous().numpy()
    data = DeviceData(x, y, x[:1000], y[:1000], MEAN, STD, 4, "zeros", True, device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; width {width:g}; {steps} timed steps x {args.trials} "
          f"alternating trials per side; fp32")
    print(f"{'model':<18} {'batch':>5} {'workers':>7} {'reference img/s':>16} {'project img/s':>14} {'ratio':>6}")
    for label, arch, batch, workers, opt_name in CASES:
        ref, own = [], []
        for _ in range(args.trials):  # alternate, so drift hits both sides alike
            ref.append(_reference_trial(arch, width, batch, workers, opt_name, x_hwc, y, steps, device))
            own.append(_project_trial(arch, width, batch, opt_name, data, steps, device))
        r, o = statistics.median(ref), statistics.median(own)
        print(f"{label:<18} {batch:>5} {workers:>7} {r:>16,.0f} {o:>14,.0f} {o / r:>5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
