"""The streaming data path, for datasets that do not fit on the device (ImageNet, Restricted ImageNet,
Tiny-ImageNet): images stay on disk as files, worker processes decode and augment them, the training loop receives
uint8 batches and normalises them on the device, as the in-memory path does.

Library choice: torchvision's ``DataLoader`` with worker processes, Pillow's decoder (libjpeg-turbo in its wheels)
and the transforms written here on uint8 tensors. It needs nothing beyond what the harness installs, reads the standard
ImageFolder / Tiny-ImageNet layouts in place (no conversion to shards first, as WebDataset, FFCV or DALI want),
runs the same on a laptop and a GPU node, and its throughput is measured (``benchmarks/bench_stream.py``: decode +
augment images/s per CPU core). GPU JPEG decoding (``torchvision.io.decode_jpeg(device="cuda")``) and DALI are faster
per core; they stay an option for a lab whose CPUs cannot feed its GPUs.

Determinism, as the in-memory path: each epoch draws its order (a permutation) and one augmentation seed from the
stage's generator; every image's random crop and flip come from a generator seeded by that seed and the image's
position in the epoch, so the batches do not depend on which worker decoded them or how many there are. A stage
resumed at an epoch end draws the same next epoch. Evaluation splits are read in a fixed order (a fixed subset
when ``limit`` is given, as :func:`~harness.data.device.fixed_subset`).

Transforms (``DatasetConfig.augment``):

* ``pad_crop_flip``: pad by ``crop_padding`` (zeros or reflect), crop the image size back, flip with p = 0.5 (the
  CIFAR recipe at the source's size, e.g. Tiny-ImageNet's 64 px); evaluation: the image as it is;
* ``resized_crop_flip``: the ImageNet recipe: a random crop of 8-100 % of the area with aspect ratio in [3/4, 4/3]
  (ten tries, then the central crop of the nearest allowed ratio), resized to ``image_size``, flipped with p = 0.5;
  evaluation: resize the short side to ``eval_resize``, then the central ``image_size`` square.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torchvision.transforms.v2 import functional as TF

from harness.data.device import EVAL_SPLITS, PAD_MODES, fixed_subset
from harness.data.sources import DataError, Source

__all__ = ["StreamData", "Split", "AUGMENTS", "random_resized_box", "workers_default"]

AUGMENTS = ("pad_crop_flip", "resized_crop_flip")


def workers_default() -> int:
    """Decoding workers per trial: ``PRUNEBENCH_DATA_WORKERS``, else the CPUs this process may use minus one (1..16)."""
    env = os.environ.get("PRUNEBENCH_DATA_WORKERS")
    if env:
        return max(0, int(env))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(16, cpus - 1))


@dataclass(frozen=True)
class Split:
    """One split on disk: file paths and labels in a fixed (sorted) order."""

    paths: tuple[str, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, idx: torch.Tensor | None) -> "Split":
        if idx is None:
            return self
        keep = idx.tolist()
        return Split(tuple(self.paths[i] for i in keep), tuple(self.labels[i] for i in keep))


def random_resized_box(height: int, width: int, g: torch.Generator, scale=(0.08, 1.0),
                       ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop covering ``scale`` of the area with aspect ratio (w / h) in ``ratio``,
    drawn from ``g``: ten tries; then the central crop with the ratio clamped to the allowed range."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(3, generator=g).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=g))
            left = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class _Images(torch.utils.data.Dataset):
    """Decoding and augmentation of one split, run in the DataLoader's workers. An item is ``(position, seed)``:
    ``seed`` < 0 means the evaluation transform."""

    def __init__(self, split: Split, augment: str, size: int, eval_resize: int, crop_padding: int, pad_mode: str,
                 hflip: bool):
        self.split, self.augment, self.size, self.eval_resize = split, augment, size, eval_resize
        self.crop_padding, self.pad_mode, self.hflip = crop_padding, pad_mode, hflip

    def __len__(self) -> int:
        return len(self.split)

    def _decode(self, i: int) -> torch.Tensor:
        path = self.split.paths[i]
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
        except (OSError, ValueError) as e:
            raise DataError(f"cannot decode {path}: {e}") from None
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        i, seed = key
        img = self._decode(i)
        label = self.split.labels[i]
        if seed < 0:
            return self._eval(img), label
        g = torch.Generator().manual_seed(seed)
        if self.augment == "resized_crop_flip":
            top, left, h, w = random_resized_box(img.shape[1], img.shape[2], g)
            img = TF.resized_crop(img, top, left, h, w, [self.size, self.size], antialias=True)
        else:
            img = self._fit(img)
            p = self.crop_padding
            if p:
                padded = F.pad(img.unsqueeze(0).float(), (p, p, p, p), mode="constant" if self.pad_mode == "zeros"
                               else "reflect").squeeze(0)
                dy, dx = (int(v) for v in torch.randint(0, 2 * p + 1, (2,), generator=g))
                img = padded[:, dy:dy + self.size, dx:dx + self.size].to(torch.uint8)
        if self.hflip and bool(torch.rand(1, generator=g) < 0.5):
            img = img.flip(-1)
        return img.contiguous(), label

    def _fit(self, img: torch.Tensor) -> torch.Tensor:
        """An image at the source's size as it is; another size resized to it (the layout promises one size)."""
        if img.shape[1:] != (self.size, self.size):
            img = TF.resize(img, [self.size, self.size], antialias=True)
        return img

    def _eval(self, img: torch.Tensor) -> torch.Tensor:
        if self.augment == "resized_crop_flip":
            img = TF.resize(img, self.eval_resize, antialias=True)  # the short side
            return TF.center_crop(img, [self.size, self.size]).contiguous()
        return self._fit(img).contiguous()


class StreamData:
    """A dataset read from disk while training; the interface of :class:`~harness.data.device.DeviceData` (batches
    arrive on ``device`` as normalised float32)."""

    def __init__(self, train: Split, test: Split, source: Source, mean: Sequence[float], std: Sequence[float],
                 augment: str, image_size: int, eval_resize: int, crop_padding: int, pad_mode: str, hflip: bool,
                 device: torch.device | str = "cpu", val: Split | None = None, workers: int | None = None):
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        self.train, self.test, self.val, self.source = train, test, val, source
        self._device = torch.device(device)
        self._mean = torch.tensor(list(mean), dtype=torch.float32, device=self._device).view(1, -1, 1, 1)
        self._std = torch.tensor(list(std), dtype=torch.float32, device=self._device).view(1, -1, 1, 1)
        self.image_size = image_size
        self.workers = workers_default() if workers is None else workers
        self._sets = {name: _Images(split, augment, image_size, eval_resize, crop_padding, pad_mode, hflip)
                      for name, split in (("train", train), ("test", test), ("val", val)) if split is not None}
        self.digest: str | None = None
        self.max_batches: int | None = None  # smoke runs: at most this many batches per pass

    # -- the DeviceData interface
    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_test(self) -> int:
        return len(self.test)

    @property
    def n_val(self) -> int:
        return 0 if self.val is None else len(self.val)

    @property
    def has_val(self) -> bool:
        return self.val is not None

    @property
    def device(self) -> torch.device:
        return self._device

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32, copy=True).div_(255).sub_(self._mean).div_(self._std)

    def fingerprint(self) -> str:
        """A digest of what is read: every file's path (relative to the split's common folder), size and label."""
        if self.digest is None:
            h = hashlib.sha256()
            for split in (self.train, self.test, self.val):
                if split is None:
                    continue
                for p, y in zip(split.paths, split.labels):
                    h.update(f"{Path(p).name}:{os.path.getsize(p)}:{y}\n".encode())
            self.digest = h.hexdigest()[:16]
        return self.digest

    def _loader(self, name: str, keys: list[list[tuple[int, int]]]):
        pin = self._device.type == "cuda"
        loader = torch.utils.data.DataLoader(self._sets[name], batch_sampler=keys, num_workers=self.workers,
                                             pin_memory=pin, persistent_workers=False,
                                             prefetch_factor=4 if self.workers else None)
        for x, y in loader:
            yield (self.normalise(x.to(self._device, non_blocking=pin)),
                   y.to(self._device, torch.int64, non_blocking=pin))

    def train_batches(self, generator: torch.Generator, batch_size: int,
                      drop_last: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One shuffled, augmented epoch: the order and the epoch's augmentation seed drawn from ``generator``."""
        n = self.n_train
        if batch_size <= 0 or (drop_last and n < batch_size):
            raise DataError(f"batch size {batch_size} does not fit {n} training images (drop_last={drop_last})")
        order = torch.randperm(n, generator=generator, device=generator.device).tolist()
        base = int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device))
        stop = (n // batch_size) * batch_size if drop_last else n
        batches = [[(order[j], base + j) for j in range(s, min(s + batch_size, stop))]
                   for s in range(0, stop, batch_size)]
        yield from self._loader("train", batches[: self.max_batches])

    def eval_batches(self, split: str, batch_size: int, limit: int | None = None,
                     generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Fixed-order batches of ``split`` (the fixed subset of ``limit`` images when given); ``train_augmented``:
        the training transform, drawn from ``generator``."""
        if split not in EVAL_SPLITS:
            raise ValueError(f"split must be one of {EVAL_SPLITS}, got {split!r}")
        if split == "val" and self.val is None:
            raise ValueError("this data has no validation split")
        name = "train" if split.startswith("train") else split
        total = len(self._sets[name])
        idx = fixed_subset(total, min(limit, total)) if limit is not None else None
        positions = idx.tolist() if idx is not None else list(range(total))
        if split == "train_augmented":
            if generator is None:
                raise ValueError("eval_batches('train_augmented') needs a generator")
            base = int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device))
            keys = [(p, base + j) for j, p in enumerate(positions)]
        else:
            keys = [(p, -1) for p in positions]
        batches = [keys[s:s + batch_size] for s in range(0, len(keys), batch_size)]
        yield from self._loader(name, batches[: self.max_batches])
