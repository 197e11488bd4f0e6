"""Decode + augment throughput of the streaming data path (harness.data.stream), in images per second per CPU core.

    .venv/bin/python benchmarks/bench_stream.py [--images 384] [--workers 0 2]

It writes JPEGs shaped like ImageNet's (500 x 375 on average, quality 90, photographic-like content: smooth
fields plus noise, so they compress about as real photos do) and Tiny-ImageNet's (64 x 64), then times the
training transform (ImageNet: decode, RandomResizedCrop 224, flip; Tiny-ImageNet: decode, pad-crop 64, flip) and
ImageNet's evaluation transform (decode, resize 256, centre crop 224):

* in the calling process (``workers 0``): one core's throughput, the figure to size a node with;
* through the DataLoader with N worker processes, as training reads it (batches of 256, uint8 to the device, here
  the CPU), per worker.

A GPU trains ResNet-50 at roughly 2,500-3,000 images/s in bf16 (an A100/H100 class figure): divide by the per-core
figure for the cores one GPU needs. Figures go to benchmarks/RESULTS.md by hand (they are not training figures,
which benchmarks/figures.json holds for `prunebench plan`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.data.sources import SOURCES  # noqa: E402
from harness.data.stream import Split, StreamData  # noqa: E402
from harness.figures import device_name  # noqa: E402


def photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random field plus a little noise: compresses like a photograph (not like white noise)."""
    small = rng.integers(0, 256, (max(2, h // 32), max(2, w // 32), 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), dtype=np.int16)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def write(folder: Path, n: int, sizes, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = sizes(rng)
        p = folder / f"{i:05d}.JPEG"
        Image.fromarray(photo(rng, h, w)).save(p, quality=90)
        paths.append(str(p))
    return Split(tuple(paths), tuple(i % 10 for i in range(n)))


def imagenet_size(rng) -> tuple[int, int]:  # ImageNet's typical shapes: 500 on the long side, 333-500 on the short
    short = int(rng.integers(333, 501))
    return (short, 500) if rng.random() < 0.7 else (500, short)


def data(split: Split, source: str, augment: str, size: int, workers: int) -> StreamData:
    src = SOURCES[source]
    return StreamData(split, split, src, src.mean, src.std, augment, size, src.eval_resize or size,
                      crop_padding=4 if augment == "pad_crop_flip" else 0, pad_mode="zeros", hflip=True,
                      workers=workers)


def rate(d: StreamData, train: bool, batch: int) -> float:
    g = torch.Generator().manual_seed(0)
    passes = d.train_batches(g, batch, drop_last=False) if train else d.eval_batches("test", batch)
    it = iter(passes)
    first = next(it)  # worker start-up and the first batch are not throughput
    t0, n = time.perf_counter(), 0
    for x, _ in it:
        n += x.shape[0]
    dt = time.perf_counter() - t0
    del first
    return n / dt if n else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=384)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = ap.parse_args()
    torch.set_num_threads(1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        imagenet = write(Path(tmp) / "imagenet", args.images, imagenet_size)
        tiny = write(Path(tmp) / "tiny", args.images * 4, lambda rng: (64, 64), seed=1)
        cases = [("imagenet train (RandomResizedCrop 224 + flip)", imagenet, "imagenet", "resized_crop_flip", 224, True),
                 ("imagenet eval (resize 256, centre crop 224)", imagenet, "imagenet", "resized_crop_flip", 224, False),
                 ("tiny_imagenet train (pad-crop 64 + flip)", tiny, "tiny_imagenet", "pad_crop_flip", 64, True)]
        print(f"{device_name()}, {cores} cores; {args.images} ImageNet-shaped JPEGs, {4 * args.images} 64 x 64")
        for name, split, source, augment, size, train in cases:
            for w in args.workers:
                if w > cores:
                    continue
                r = rate(data(split, source, augment, size, w), train, batch=64)
                per_core = r / max(1, w)
                print(f"  {name:<48} workers {w}: {r:8.0f} img/s  ({per_core:6.0f} img/s per decoding core)")


if __name__ == "__main__":
    main()
