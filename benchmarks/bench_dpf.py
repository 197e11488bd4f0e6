"""DPF's per-step overheads (dpf.md section 8), measured on the real code: one mask update (scores
plus a global selection over every conv weight, re-selected over all entries) and the dense/masked
swap of the straight-through step (stash m * w before the forward pass, restore w before the
optimizer step), each as a fraction of one training step (forward + backward + SGD with Nesterov).
A mask update runs every 16 iterations, so its amortised share is update / 16 / step.

    python benchmarks/bench_dpf.py [--models resnet56_cifar_optb wrn28_8_preact_lin] [--batch-size 128]
                                   [--steps 5] [--device cuda] [--json out.json]

Run by ``make bench``, never by ``make test``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.models.build import build_model  # noqa: E402
from harness.pruning import scores  # noqa: E402
from harness.pruning.masks import MaskSet  # noqa: E402
from harness.train import sync  # noqa: E402



def _time(fn, device: torch.device, repeat: int) -> float:
    fn()
    sync(device)
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - t) / repeat


def bench(arch: str, device: torch.device, batch: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = build_model(arch, 10).to(device)
    masks = MaskSet.for_model(model, "conv_weights")
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, nesterov=True, weight_decay=1e-4)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def update():
        masks.select_(scores.compute("magnitude", masks.score_inputs(), dense=True), "global", density=0.1,
                      eligible="all")

    update()  # a realistic mask before timing the swap

    def swap():
        masks.stash_dense_()
        masks.restore_dense_()

    t_step = _time(step, device, steps)
    t_update = _time(update, device, max(2, steps // 2))
    t_swap = _time(swap, device, 20)
    n = sum(p.numel() for p in masks.params.values())
    return {"model": arch, "prunable": n, "batch": batch, "step_ms": 1e3 * t_step, "update_ms": 1e3 * t_update,
            "swap_ms": 1e3 * t_swap, "update_per_step": t_update / t_step,
            "update_amortised_16": t_update / 16 / t_step, "swap_per_step": t_swap / t_step}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet56_cifar_optb", "wrn28_8_preact_lin"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 128 on CUDA, 16 on the CPU")
    ap.add_argument("--steps", type=int, default=None, help="timed training steps (default: 50 on CUDA, 3 on the CPU)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    batch = args.batch_size or (128 if device.type == "cuda" else 16)
    steps = args.steps or (50 if device.type == "cuda" else 3)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; batch {batch}; fp32")
    print(f"{'model':<22} {'prunable':>11} {'step ms':>9} {'update ms':>10} {'swap ms':>8} "
          f"{'update/step':>12} {'upd/16/step':>12} {'swap/step':>10}")
    rows = []
    for arch in args.models:
        r = bench(arch, device, batch, steps)
        rows.append(r)
        print(f"{arch:<22} {r['prunable']:>11,} {r['step_ms']:>9.1f} {r['update_ms']:>10.1f} {r['swap_ms']:>8.2f} "
              f"{100 * r['update_per_step']:>11.1f}% {100 * r['update_amortised_16']:>11.2f}% "
              f"{100 * r['swap_per_step']:>9.2f}%")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
