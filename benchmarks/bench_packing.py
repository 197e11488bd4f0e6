"""Trial packing: the aggregate training throughput of K small trials sharing one device (issue
"Training speed", item 3; issue AP, item 7).

K processes, each one trial as the scheduler runs it (a Ray trial is a process; on the CPU it uses
as many threads as its ``resources.cpu``, i.e. the device's threads / K here; on a GPU every
trial gets ``gpu: 1/K``), train ResNet-20 (option B, the DPF/AP model) at batch 64 with SGD and
half of the conv weights masked (masks re-applied after every step) through the project's loop on
synthetic CIFAR-shaped images. They start together (a barrier after warm-up), train whole epochs
for ``--seconds``, and the aggregate images/s is the sum of the trials' rates. On the CPU one trial
on one thread is measured too (recorded under the device name with ``x1 threads``).

    python benchmarks/bench_packing.py [--device cuda] [--widths 0.25 1.0] [--trials 1 2 4 8]
                                       [--batch 64] [--seconds 6] [--record]

Width 0.25 is the ci scale (the DPF and AP ``ci`` profiles), width 1 the full scale. ``--record``
adds each (width, K) to ``benchmarks/figures.json``: K = 1 is also the single-trial figure
``prunebench plan`` uses, K > 1 its "packed" estimate. Run by hand or ``make bench``, never by
``make test``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
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

ARCH = "resnet20_cifar_optb"
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)



def _trial(rank: int, cfg: dict, barrier, out) -> None:
    """One trial: warm up, wait for the others, train whole epochs for cfg['seconds']."""
    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    g = torch.Generator().manual_seed(rank)
    x = torch.randint(0, 256, (cfg["n"], 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (cfg["n"],), generator=g)
    data = DeviceData(x, y, x[:256], y[:256], MEAN, STD, 4, "zeros", True, device=device)
    torch.manual_seed(rank)
    model = build_model(ARCH, 10, cfg["width"]).to(device)
    masks = MaskSet.for_model(model, "conv_weights")
    masks.prune_("magnitude", "global", 0.5)
    opt = make_optimizer(OptimizerConfig(name="sgd", lr=0.1, weight_decay=1e-4, momentum=0.9), model.parameters())
    fast = FastPath(channels_last=cfg["channels_last"], compile=cfg["compile"])
    kw = dict(optimizer=opt, scheduler=None, batch_size=cfg["batch"], drop_last=True, hooks=MaskedHook(masks),
              precision=cfg["precision"], fast=fast)
    spe = cfg["n"] // cfg["batch"]
    train(model, data, steps=cfg["warmup"], seed=0, **kw)
    sync(device)
    barrier.wait()
    t0 = time.perf_counter()
    steps = epoch = 0
    while time.perf_counter() - t0 < cfg["seconds"]:
        epoch += 1
        train(model, data, steps=spe, seed=epoch, **kw)
        steps += spe
    sync(device)
    dt = time.perf_counter() - t0
    out.put((rank, steps * cfg["batch"], dt, fast.compile_s))


def bench(k: int, cfg: dict) -> dict:
    ctx = mp.get_context("spawn")  # torch is not fork-safe once it has run ops
    barrier, out = ctx.Barrier(k), ctx.Queue()
    procs = [ctx.Process(target=_trial, args=(r, cfg, barrier, out)) for r in range(k)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"a trial process exited with {p.exitcode}")
    rates = [images / dt for _, images, dt, _ in results]
    return {"trials": k, "aggregate_images_per_s": sum(rates), "per_trial_images_per_s": sum(rates) / k,
            "compile_s": max(c for *_, c in results)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--widths", type=float, nargs="+", default=[0.25, 1.0], help="0.25: ci scale; 1: full scale")
    ap.add_argument("--trials", type=int, nargs="+", default=[1, 2, 4, 8], help="trials sharing the device")
    ap.add_argument("--batch", type=int, default=64, help="AP's batch size")
    ap.add_argument("--seconds", type=float, default=None, help="timed window per trial (default 20 on CUDA, 5 on the CPU)")
    ap.add_argument("--n", type=int, default=None,
                    help="synthetic training images per trial; the window ends at an epoch end (default 2048 on CUDA, 256 on the CPU)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--record", nargs="?", const="benchmarks/figures.json", default=None, metavar="FIGURES",
                    help="add the figures to the file prunebench plan reads (default benchmarks/figures.json)")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    threads = torch.get_num_threads()
    name = device_name(device, threads)
    seconds = args.seconds or (20.0 if cuda else 5.0)
    n = args.n or (2048 if cuda else 256)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device: {name}; torch {torch.__version__}; {ARCH} batch {args.batch}; {args.precision}; "
          f"channels_last {args.channels_last}; compile {args.compile}; {seconds:g} s per trial; load average {load:.1f}")
    print(f"{'width':>6} {'trials':>6} {'threads/trial':>13} {'aggregate img/s':>16} {'per trial':>10} {'vs 1 trial':>10}")
    figures = []
    for width in args.widths:
        base = None
        for k in args.trials:
            cfg = {"device": args.device, "width": width, "batch": args.batch, "n": n, "seconds": seconds,
                   "warmup": 3, "threads": max(1, threads // k),
                   "precision": args.precision, "channels_last": args.channels_last, "compile": args.compile}
            r = bench(k, cfg)
            base = base or r["aggregate_images_per_s"]
            print(f"{width:>6g} {k:>6} {cfg['threads']:>13} {r['aggregate_images_per_s']:>16,.0f} "
                  f"{r['per_trial_images_per_s']:>10,.0f} {r['aggregate_images_per_s'] / base:>9.2f}x", flush=True)
            figures.append(entry("bench_packing", ARCH, width, args.batch, r["aggregate_images_per_s"], name,
                                 precision=args.precision, channels_last=args.channels_last, compile=args.compile,
                                 trials=k, threads_per_trial=cfg["threads"], seconds=seconds))
        if not cuda and threads > 1:  # the other way to use the CPU: one trial on one thread
            cfg = {**cfg, "threads": 1}
            r = bench(1, cfg)
            print(f"{width:>6g} {1:>6} {1:>13} {r['aggregate_images_per_s']:>16,.0f} "
                  f"{r['per_trial_images_per_s']:>10,.0f} {r['aggregate_images_per_s'] / base:>9.2f}x  (one thread)",
                  flush=True)
            figures.append(entry("bench_packing", ARCH, width, args.batch, r["aggregate_images_per_s"],
                                 device_name(device, 1), precision=args.precision, channels_last=args.channels_last,
                                 compile=args.compile, trials=1, threads_per_trial=1, seconds=seconds))
    if args.record:
        record(figures, args.record)
        print(f"recorded in {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
