"""GPU readiness: what works on this machine's GPU and how fast, before GPU-days are spent (``make gpu-check``).

    .venv/bin/python scripts/gpu_check.py [--device cuda] [--quick] [--only NAME ...]

Checks, each with its own time limit, each reported ``ok`` / ``FAILED: <one line>`` / ``skipped: <why>`` with its
figures, then a summary (exit status 1 if any check failed):

* ``cuda``: the device, its memory, torch's CUDA and cuDNN versions;
* ``fast_path``: training steps of ResNet-20 and VGG-16 (CIFAR, masked) in fp32, bf16, channels_last, compile and
  all three (benchmarks/bench_fast_path.py), images/s and compile seconds;
* ``imagenet_batch``: the streaming path end to end: synthetic ImageNet JPEGs in the ImageFolder layout, decoded and
  augmented by DataLoader workers, one batch of 64 to the GPU, one bf16 training step of ResNet-50 at 224 px;
* ``ray_shares``: two Ray tasks with ``num_gpus=0.5`` each on the one GPU at the same time (the manifests'
  fractional shares), each running CUDA work; skipped when Ray is not installed;
* ``cells``: one cell per paper (the first cell of each full profile) smoke-run on the GPU at full model size
  through the real loaders on synthetic files (``prunebench run --smoke``'s machinery);
* ``pags_sampler``: seconds per PAGS candidate (the mask-graph distance of one random mask) on ResNet-34 and
  VGG-16-BN (benchmarks/bench_graph.py; on a CPU these take 14-86 s each).

``--device cpu`` runs the same checks on the CPU (for testing the script; the figures then mean little).
Put what it prints in benchmarks/RESULTS.md with the device name and date.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PY = sys.executable


def _tail(text: str, n: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _script(args: list[str], timeout: float) -> str:
    r = subprocess.run([PY, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(_tail(r.stdout + r.stderr, 1) or f"exit status {r.returncode}")
    return _tail(r.stdout, 40)


def check_cuda(device: str, quick: bool) -> str:
    import torch

    if device == "cpu":
        return f"CPU run (torch {torch.__version__}); no CUDA checked"
    if not torch.cuda.is_available():
        raise RuntimeError("torch.cuda.is_available() is False")
    p = torch.cuda.get_device_properties(0)
    return (f"{p.name}, {p.total_memory / 2 ** 30:.0f} GiB, capability {p.major}.{p.minor}; torch {torch.__version__}, "
            f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")


def check_fast_path(device: str, quick: bool) -> str:
    steps = ["--steps", "5", "--trials", "1"] if quick else []
    width = ["--width", "0.25"] if device == "cpu" else []
    return _script(["benchmarks/bench_fast_path.py", "--device", device, *steps, *width], 1200)


def check_imagenet_batch(device: str, quick: bool) -> str:
    import torch

    from harness.config.schema import DatasetConfig, OptimizerConfig
    from harness.data import synthetic
    from harness.data.loading import open_data
    from harness.data.sources import IMAGENET_MEAN, IMAGENET_STD
    from harness.models.build import build_model
    from harness.train import make_optimizer

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        synthetic.write("imagenet", Path(tmp), per_class=1)  # 1,000 classes, one image each
        ds = DatasetConfig("imagenet", IMAGENET_MEAN, IMAGENET_STD, 0, "zeros", True, augment="resized_crop_flip",
                           image_size=224, eval_resize=256)
        data = open_data(ds, Path(tmp), False, device)
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        x, y = next(iter(data.train_batches(g, 64, drop_last=True)))
        load_s = time.perf_counter() - t0
        model = build_model("resnet50_tv", 1000).to(device).to(memory_format=torch.channels_last)
        opt = make_optimizer(OptimizerConfig(name="sgd", lr=0.1, weight_decay=1e-4, momentum=0.9), model.parameters())
        times = []
        for _ in range(1 if quick else 3):
            t0 = time.perf_counter()
            with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if device != "cpu":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return (f"{data.n_train} files listed; first batch {tuple(x.shape)} {x.dtype} on {x.device} in {load_s:.1f} s "
                f"({data.workers} workers, start-up included); ResNet-50 bf16 step {min(times) * 1e3:.0f} ms "
                f"(batch 64, loss {loss.item():.2f})")


def check_ray_shares(device: str, quick: bool) -> str:
    try:
        import ray
    except ImportError:
        return "skipped: Ray is not installed here (carry its wheels, see the device README)"
    ray.init(num_cpus=2, num_gpus=0 if device == "cpu" else 1, include_dashboard=False, log_to_driver=False)
    try:
        @ray.remote(num_gpus=0 if device == "cpu" else 0.5)
        def share(dev: str) -> tuple[float, float, str]:
            import time as t

            import torch as th

            start = t.time()
            a = th.randn(4096 if dev != "cpu" else 256, 4096 if dev != "cpu" else 256, device=dev)
            for _ in range(3000 if dev != "cpu" else 200):  # seconds of work on either
                a = (a @ a).tanh_()
            if dev != "cpu":
                th.cuda.synchronize()
            return start, t.time(), os.environ.get("CUDA_VISIBLE_DEVICES", "")
        spans = ray.get([share.remote(device), share.remote(device)], timeout=300)
    finally:
        ray.shutdown()
    overlap = min(e for _, e, _ in spans) - max(s for s, _, _ in spans)
    if overlap <= 0:
        raise RuntimeError(f"the two 0.5-GPU tasks did not run at the same time ({spans})")
    return f"two num_gpus=0.5 tasks overlapped {overlap:.1f} s on CUDA_VISIBLE_DEVICES={spans[0][2]!r}"


def check_cells(device: str, quick: bool) -> str:
    from harness.config.load import load
    from harness.grid import smoke
    from harness.grid.expand import expand

    lines, failed = [], []
    for paper in ("lamp", "dpf", "ap", "pags"):
        first = smoke.cells(expand(load(ROOT / "paper_configs" / f"{paper}.yaml")))[:1]
        for r in smoke.run(first, device=device, log=lambda line: None):
            lines.append(f"{paper}: {r.name} {'ok' if r.error is None else 'FAILED: ' + r.error} ({r.seconds:.1f} s)")
            if r.error:
                failed.append(r.name)
    if failed:
        raise RuntimeError("; ".join(lines))
    return "\n".join(lines)


def check_pags_sampler(device: str, quick: bool) -> str:
    models = ["resnet34_tv_imagenet_stem"] if quick else ["resnet34_tv_imagenet_stem", "vgg16_bn_tv_4096fc"]
    return _script(["benchmarks/bench_graph.py", "--device", device, "--models", *models, "--no-reference"], 1800)


CHECKS = {"cuda": check_cuda, "fast_path": check_fast_path, "imagenet_batch": check_imagenet_batch,
          "ray_shares": check_ray_shares, "cells": check_cells, "pags_sampler": check_pags_sampler}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="fewer steps and models (a first look)")
    ap.add_argument("--only", nargs="+", choices=list(CHECKS), default=list(CHECKS))
    args = ap.parse_args(argv)
    results = []
    for name in args.only:
        t0 = time.perf_counter()
        try:
            out, status = CHECKS[name](args.device, args.quick), "ok"
            if out.startswith("skipped:"):
                status, out = "skipped", out.removeprefix("skipped:").strip()
        except Exception as e:  # noqa: BLE001 (each check reports; the others go on)
            status, out = "FAILED", f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            if os.environ.get("GPU_CHECK_TRACEBACK"):
                traceback.print_exc()
        dt = time.perf_counter() - t0
        results.append((name, status))
        print(f"== {name}: {status} ({dt:.0f} s)", flush=True)
        print("   " + out.replace("\n", "\n   "), flush=True)
    print("summary: " + ", ".join(f"{n} {s}" for n, s in results))
    return 1 if any(s == "FAILED" for _, s in results) else 0


if __name__ == "__main__":
    sys.exit(main())
