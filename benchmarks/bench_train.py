"""Training-path throughput: the real loop (device-resident data, batched augmentation, masks
re-applied after every step) on each LAMP model. Run by ``make bench``, never by ``make test``.

    python benchmarks/bench_train.py [--models vgg16_bn_fc1_lamp ...] [--steps 50] [--device cuda]
                                     [--precision bf16] [--channels-last] [--compile] [--width 1.0]
                                     [--batch-size 100] [--json out.json] [--record]

``--record`` adds each model's images/s to ``benchmarks/figures.json`` (what ``prunebench plan``
turns into hours). ``--channels-last`` / ``--compile`` are the fast-path switches of the manifest
(``training.channels_last`` / ``training.compile``); the compile time (the warm-up steps that
compiled) is reported apart from the timed steps.

Reports images/second for training steps (forward + backward + AdamW + mask re-application),
the cost of the mask re-application alone, one epoch of batched crop+flip over 50,000 images,
and, on CUDA, MFU against the measured 798 TFLOP/s bf16 ceiling (common.md §5.1) with
training FLOPs = 6 x forward MACs (dense kernels execute regardless of the mask).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.data.device import DeviceData  # noqa: E402
from harness.pruning.updates import MaskedHook  # noqa: E402
from harness.config import OptimizerConfig  # noqa: E402
from harness.metrics import macs  # noqa: E402
from harness.models.build import MODELS, build_model  # noqa: E402
from harness.pruning.masks import MaskSet  # noqa: E402
from harness.figures import device_name, entry, record  # noqa: E402
from harness.train import FastPath, make_optimizer, train, sync  # noqa: E402

PEAK_BF16 = 798e12  # measured H100/H200 dense bf16 GEMM ceiling (common.md §5.1)
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)



def synthetic_cifar(n: int, device: torch.device) -> DeviceData:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DeviceData(x, y, x[:1000], y[:1000], MEAN, STD, 4, "zeros", True, device=device)


def bench_model(arch: str, data: DeviceData, *, width: float, batch: int, steps: int, warmup: int,
                precision: str, channels_last: bool = False, compile: bool = False) -> dict:
    device = data.device
    torch.manual_seed(0)
    model = build_model(arch, 10, width).to(device)
    masks = MaskSet.for_model(model, "conv_and_linear_weights")
    masks.prune_("lamp", "global", 0.5)  # a realistic mask: half the weights gone
    opt = make_optimizer(OptimizerConfig(name="adamw", lr=3e-4, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8),
                         model.parameters())
    fast = FastPath(channels_last=channels_last, compile=compile)
    kw = dict(optimizer=opt, scheduler=None, batch_size=batch, drop_last=True, hooks=MaskedHook(masks),
              precision=precision, fast=fast)
    train(model, data, steps=warmup, seed=0, **kw)
    compile_s = fast.compile_s
    sync(device)
    t0 = time.perf_counter()
    train(model, data, steps=steps, seed=1, **kw)
    sync(device)
    dt = time.perf_counter() - t0
    img_s = steps * batch / dt
    # mask re-application alone, per step
    reps = 50
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        masks.apply_()
    sync(device)
    mask_ms = (time.perf_counter() - t0) / reps * 1e3
    fwd_macs = macs(model)[0]
    row = {"model": arch, "width": width, "batch": batch, "steps": steps, "images_per_s": round(img_s, 1),
           "step_ms": round(dt / steps * 1e3, 3), "mask_apply_ms": round(mask_ms, 4),
           "fwd_macs": fwd_macs, "train_tflop_s": round(6 * fwd_macs * img_s / 1e12, 3),
           "precision": precision, "channels_last": channels_last, "compile": compile}
    if compile:
        row["compile_s"] = round(compile_s, 2)
    if device.type == "cuda":
        row["mfu_vs_798tflops"] = round(6 * fwd_macs * img_s / PEAK_BF16, 4)
    return row


def bench_augmentation(data: DeviceData, reps: int = 3) -> float:
    gen = torch.Generator(device=data.device).manual_seed(0)
    data.augmented_epoch(gen)
    sync(data.device)
    t0 = time.perf_counter()
    for _ in range(reps):
        data.augmented_epoch(gen)
    sync(data.device)
    return (time.perf_counter() - t0) / reps * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=sorted(MODELS))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--width", type=float, default=None, help="width multiplier (default 1.0 on CUDA, 0.125 on CPU)")
    ap.add_argument("--batch-size", type=int, default=100, help="LAMP's batch size")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 200 on CUDA, 10 on CPU)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--n-train", type=int, default=50_000, help="training-set size held on the device")
    ap.add_argument("--channels-last", action="store_true", help="fast path: NHWC model and batches")
    ap.add_argument("--compile", action="store_true", help="fast path: torch.compile of the forward pass and loss")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--record", nargs="?", const="benchmarks/figures.json", default=None, metavar="FIGURES",
                    help="add the images/s to the figures file prunebench plan reads (default benchmarks/figures.json)")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    width = args.width if args.width is not None else (1.0 if cuda else 0.125)
    steps = args.steps or (200 if cuda else 10)
    name = device_name(device, torch.get_num_threads())
    data = synthetic_cifar(args.n_train, device)
    aug_ms = bench_augmentation(data)
    print(f"device: {name}; torch {torch.__version__}; precision {args.precision}; width {width}; "
          f"batch {args.batch_size}; {steps} timed steps; channels_last {args.channels_last}; compile {args.compile}")
    print(f"batched crop+flip of {data.n_train:,} images: {aug_ms:.1f} ms per epoch")
    header = f"{'model':<28} {'img/s':>10} {'ms/step':>9} {'mask ms':>8} {'TFLOP/s':>8}" + (f" {'MFU':>6}" if cuda else "")
    print(header)
    rows = []
    for arch in args.models:
        r = bench_model(arch, data, width=width, batch=args.batch_size, steps=steps, warmup=max(3, steps // 10),
                        precision=args.precision, channels_last=args.channels_last, compile=args.compile)
        rows.append(r)
        line = f"{arch:<28} {r['images_per_s']:>10,.0f} {r['step_ms']:>9.2f} {r['mask_apply_ms']:>8.3f} {r['train_tflop_s']:>8.3f}"
        if cuda:
            line += f" {100 * r['mfu_vs_798tflops']:>5.1f}%"
        if args.compile:
            line += f"  (compile {r['compile_s']:.1f} s, amortised over a run's steps)"
        print(line, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__, "precision": args.precision,
                                               "augment_epoch_ms": aug_ms, "rows": rows}, indent=2) + "\n")
    if args.record:
        record([entry("bench_train", r["model"], r["width"], r["batch"], r["images_per_s"], name,
                      precision=args.precision, channels_last=args.channels_last, compile=args.compile,
                      **({"compile_s": r["compile_s"]} if args.compile else {})) for r in rows], args.record)
        print(f"recorded in {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
