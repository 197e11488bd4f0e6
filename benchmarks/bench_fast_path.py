"""The fast-path switches side by side: fp32, bf16 autocast, channels_last and torch.compile of the
step, same model, batch and device, trials alternating in one process (issue "Training speed",
item 2), through the project's loop (device-resident data, masks re-applied after every step).

    python benchmarks/bench_fast_path.py [--device cuda] [--models resnet20_cifar_optb ...]
                                         [--width 0.25] [--batch 64] [--steps 10] [--trials 3]
                                         [--variants fp32 bf16 channels_last compile] [--record]

Each variant is warmed up first (for ``compile``: its compile time, reported apart), then the
variants take turns, ``--trials`` timed runs of ``--steps`` steps each; the median images/s of each
variant and its ratio to fp32 are printed. ``--record`` adds them to ``benchmarks/figures.json``.
Run by hand or ``make bench``, never by ``make test``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.config import OptimizerConfig  # noqa: E402
from harness.data.device import DeviceData  # noqa: E402
from harness.figures import device_name, entry, record  # noqa: E402
from harness.models.build import build_model  # noqa: E402
from harness.pruning.masks import MaskSet  # noqa: E402
from harness.pruning.updates import MaskedHook  # noqa: E402
from harness.train import FastPath, make_optimizer, train, sync  # noqa: E402

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
VARIANTS = {  # name -> (precision, channels_last, compile)
    "fp32": ("fp32", False, False),
    "bf16": ("bf16", False, False),
    "channels_last": ("fp32", True, False),
    "compile": ("fp32", False, True),
    "bf16+channels_last+compile": ("bf16", True, True),
}



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", nargs="+", default=["resnet20_cifar_optb", "vgg16_bn_fc1_lamp"])
    ap.add_argument("--width", type=float, default=None, help="default 1 on CUDA, 0.25 on the CPU")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=None, help="steps per timed run (default 100 on CUDA, 10 on the CPU)")
    ap.add_argument("--trials", type=int, default=3, help="timed runs per variant, alternating")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--record", nargs="?", const="benchmarks/figures.json", default=None, metavar="FIGURES")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    width = args.width or (1.0 if cuda else 0.25)
    steps = args.steps or (100 if cuda else 10)
    name = device_name(device, torch.get_num_threads())
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (max(args.batch * steps, 1024), 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (x.shape[0],), generator=g)
    data = DeviceData(x, y, x[:256], y[:256], MEAN, STD, 4, "zeros", True, device=device)
    print(f"device: {name}; torch {torch.__version__}; width {width}; batch {args.batch}; {args.trials} x {steps} "
          f"timed steps per variant, alternating")
    figures = []
    for arch in args.models:
        runs = {}
        for v in args.variants:
            precision, channels_last, compile = VARIANTS[v]
            torch.manual_seed(0)
            model = build_model(arch, 10, width).to(device)
            masks = MaskSet.for_model(model, "conv_and_linear_weights")
            masks.prune_("magnitude", "global", 0.5)
            opt = make_optimizer(OptimizerConfig(name="sgd", lr=0.05, weight_decay=5e-4, momentum=0.9),
                                 model.parameters())
            fast = FastPath(channels_last=channels_last, compile=compile)
            kw = dict(optimizer=opt, scheduler=None, batch_size=args.batch, drop_last=True, hooks=MaskedHook(masks),
                      precision=precision, fast=fast)
            train(model, data, steps=3, seed=0, **kw)  # warm-up; compiles
            runs[v] = {"kw": kw, "model": model, "compile_s": fast.compile_s, "rates": []}
        for t in range(args.trials):
            for v in args.variants:
                r = runs[v]
                sync(device)
                t0 = time.perf_counter()
                train(r["model"], data, steps=steps, seed=t + 1, **r["kw"])
                sync(device)
                r["rates"].append(steps * args.batch / (time.perf_counter() - t0))
        base = statistics.median(runs["fp32"]["rates"]) if "fp32" in runs else None
        print(f"{arch} (width {width:g}):")
        for v in args.variants:
            med = statistics.median(runs[v]["rates"])
            ratio = f"{med / base:.2f}x fp32" if base else ""
            comp = f", compile {runs[v]['compile_s']:.1f} s" if VARIANTS[v][2] else ""
            print(f"  {v:<28} {med:>10,.0f} img/s  {ratio}{comp}", flush=True)
            precision, channels_last, compile = VARIANTS[v]
            figures.append(entry("bench_fast_path", arch, width, args.batch, med, name, precision=precision,
                                 channels_last=channels_last, compile=compile,
                                 **({"compile_s": round(runs[v]["compile_s"], 1)} if compile else {})))
    if args.record:
        record(figures, args.record)
        print(f"recorded in {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
