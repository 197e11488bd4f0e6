"""Datasets and the device-resident data pipeline (common.md section 5.3).

The whole split is held on the device as uint8 NCHW.  Each epoch, random crop with padding (zeros or reflect) and
random horizontal flips are applied to all images at once by index arithmetic (two ``gather`` calls); batches are
index-gathers along a device ``randperm``.  No DataLoader, no workers, no PIL, no per-sample Python.

Zero padding is applied to the raw uint8 pixels *before* normalisation, like torchvision's
``RandomCrop(32, padding=4)`` followed by ``ToTensor`` and ``Normalize`` (a padded pixel becomes ``-mean/std``).
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DEBIAN_FASHION_MNIST",
    "NUM_CLASSES",
    "TRAIN_SIZES",
    "DataError",
    "DeviceData",
    "fixed_subset",
    "load_split",
]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
NUM_CLASSES: dict[str, int] = {"cifar10": 10, "cifar100": 100, "svhn": 10, "fashion_mnist": 10}
# Training-set sizes before any subset (for plans and step counts before the data is loaded).
TRAIN_SIZES: dict[str, int] = {"cifar10": 50_000, "cifar100": 50_000, "svhn": 73_257, "fashion_mnist": 60_000}
PAD_MODES = ("zeros", "reflect")
EVAL_SPLITS = ("train_augmented", "train", "test", "val")

_FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DataError(Exception):
    """A user-facing data problem; the message is one actionable line."""


# --------------------------------------------------------------------------------------------------- loading


def _expected_path(name: str, root: Path, train: bool) -> Path:
    """Where torchvision looks for ``name`` under ``root`` (for error messages)."""
    if name == "cifar10":
        return root / "cifar-10-batches-py"
    if name == "cifar100":
        return root / "cifar-100-python"
    if name == "svhn":
        return root / ("train_32x32.mat" if train else "test_32x32.mat")
    return root / "FashionMNIST" / "raw"


_PRETTY = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN", "fashion_mnist": "Fashion-MNIST"}


def _prepare_fashion_mnist(root: Path, download: bool) -> None:
    """Make sure ``<root>/FashionMNIST/raw`` holds the four IDX files, un-gzipping Debian's copy if needed."""
    raw = root / "FashionMNIST" / "raw"
    missing = [f for f in _FASHION_FILES if not (raw / f).is_file()]
    if not missing:
        return
    sources = [DEBIAN_FASHION_MNIST / f"{f}.gz" for f in missing]
    if not all(s.is_file() for s in sources):
        if download:
            return  # torchvision downloads into raw/
        raise DataError(
            f"Fashion-MNIST not found under {root} (expected {raw}) nor in {DEBIAN_FASHION_MNIST}; "
            f"run 'apt-get install dataset-fashion-mnist' or re-run with --download"
        )
    try:
        raw.mkdir(parents=True, exist_ok=True)
        for name, src in zip(missing, sources):
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=raw)
            try:
                with os.fdopen(fd, "wb") as out, gzip.open(src, "rb") as inp:
                    shutil.copyfileobj(inp, out, length=1 << 20)
                os.replace(tmp, raw / name)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    except (OSError, EOFError) as exc:
        raise DataError(f"could not unpack Fashion-MNIST from {DEBIAN_FASHION_MNIST} into {raw}: {exc}") from None


def _torchvision_dataset(name: str, root: Path, train: bool, download: bool):
    """Instantiate the torchvision dataset class (no transforms; we read its arrays directly)."""
    from torchvision import datasets

    if name == "cifar10":
        return datasets.CIFAR10(str(root), train=train, download=download)
    if name == "cifar100":
        return datasets.CIFAR100(str(root), train=train, download=download)
    if name == "svhn":
        return datasets.SVHN(str(root), split="train" if train else "test", download=download)
    return datasets.FashionMNIST(str(root), train=train, download=download)


def load_split(name: str, root: Path, train: bool, download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split as CPU tensors: images uint8 ``(N, 3, 32, 32)`` and labels int64 ``(N,)``.

    ``fashion_mnist`` is zero-padded by 2 px to 32x32 and replicated to 3 channels.
    """
    if name not in NUM_CLASSES:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(NUM_CLASSES))}")
    root = Path(root).expanduser()
    pretty, expected = _PRETTY[name], _expected_path(name, root, train)
    if name == "fashion_mnist":
        _prepare_fashion_mnist(root, download)
    try:
        ds = _torchvision_dataset(name, root, train, download)
    except RuntimeError as exc:
        if "not found" not in str(exc):
            raise
        hint = "put the dataset there or re-run with --download"
        if name == "fashion_mnist":
            hint = "run 'apt-get install dataset-fashion-mnist' or re-run with --download"
        raise DataError(f"{pretty} not found under {root} (expected {expected}); {hint}") from None
    except OSError as exc:  # includes URLError from a failed download
        msg = " ".join(str(exc).split())
        raise DataError(f"could not {'download' if download else 'read'} {pretty} under {root}: {msg}") from None

    if name in ("cifar10", "cifar100"):
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
        y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    elif name == "svhn":
        x = torch.from_numpy(np.ascontiguousarray(ds.data))  # already NCHW
        y = torch.as_tensor(np.asarray(ds.labels), dtype=torch.int64)  # torchvision maps label 10 -> 0
    else:
        x28 = torch.as_tensor(ds.data, dtype=torch.uint8)  # (N, 28, 28)
        x = F.pad(x28, (2, 2, 2, 2)).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
        y = torch.as_tensor(ds.targets, dtype=torch.int64)
    if x.dtype != torch.uint8 or x.shape[1:] != (3, 32, 32) or x.shape[0] != y.shape[0]:
        raise DataError(f"{pretty} under {root} has unexpected shape {tuple(x.shape)} / {tuple(y.shape)}")
    return x, y


def fixed_subset(n_total: int, n: int | None) -> torch.Tensor | None:
    """Sorted indices of a fixed subset of size ``n`` (seed 0), or None for the full set."""
    if n is None:
        return None
    if not 0 <= n <= n_total:
        raise DataError(f"subset size {n} is outside 0..{n_total} (the split has {n_total} images)")
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(0))
    return perm[:n].sort().values


# --------------------------------------------------------------------------------------------------- device data


class DeviceData:
    """A train/test split held on one device as uint8, with batched on-device augmentation."""

    def __init__(
        self,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        test_x: torch.Tensor,
        test_y: torch.Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        crop_padding: int,
        pad_mode: str,
        hflip: bool,
        device: torch.device | str = "cpu",
    ) -> None:
        for tag, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise ValueError(f"{tag}_x must be uint8 NCHW, got {x.dtype} {tuple(x.shape)}")
            if y.dim() != 1 or y.shape[0] != x.shape[0]:
                raise ValueError(f"{tag}_y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        channels, height, width = train_x.shape[1:]
        if test_x.shape[1:] != train_x.shape[1:]:
            raise ValueError(f"train/test image shapes differ: {tuple(train_x.shape)} vs {tuple(test_x.shape)}")
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std need {channels} values, got {len(mean)} / {len(std)}")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        if crop_padding < 0 or (pad_mode == "reflect" and crop_padding >= min(height, width)):
            raise ValueError(f"crop_padding {crop_padding} is invalid for {pad_mode} padding of {height}x{width}")

        self._device = torch.device(device)
        self.train_x = train_x.to(self._device).contiguous()
        self.train_y = train_y.to(self._device, torch.int64)
        self.test_x = test_x.to(self._device).contiguous()
        self.test_y = test_y.to(self._device, torch.int64)
        self._mean = torch.tensor(list(mean), dtype=torch.float32, device=self._device).view(1, -1, 1, 1)
        self._std = torch.tensor(list(std), dtype=torch.float32, device=self._device).view(1, -1, 1, 1)
        self.digest: str | None = None  # content digest, computed once when a run records its data
        self.val_x: torch.Tensor | None = None  # an optional held-out split (see load(validation=...))
        self.val_y: torch.Tensor | None = None
        self.crop_padding = int(crop_padding)
        self.pad_mode = pad_mode
        self.hflip = bool(hflip)

    @classmethod
    def load(
        cls,
        name: str,
        root: Path,
        download: bool,
        mean: Sequence[float],
        std: Sequence[float],
        crop_padding: int,
        pad_mode: str,
        hflip: bool,
        train_subset: int | None = None,
        test_subset: int | None = None,
        device: torch.device | str = "cpu",
        validation: int = 0,
    ) -> DeviceData:
        """Load ``name`` from ``root`` (optionally fixed subsets) and move it to ``device``.

        ``validation`` > 0 holds out the *last* ``validation`` images of the (subset) training split
        as a validation split (contiguous, as the PAGS predecessor's 45k/5k); it is evaluated with
        the clean (test) transform, never augmented, and never trained on."""
        train_x, train_y = load_split(name, root, train=True, download=download)
        test_x, test_y = load_split(name, root, train=False, download=download)
        idx = fixed_subset(train_x.shape[0], train_subset)
        if idx is not None:
            train_x, train_y = train_x[idx], train_y[idx]
        idx = fixed_subset(test_x.shape[0], test_subset)
        if idx is not None:
            test_x, test_y = test_x[idx], test_y[idx]
        val = None
        if validation:
            if not 0 < validation < train_x.shape[0]:
                raise DataError(f"validation split of {validation} images does not fit {train_x.shape[0]} training images")
            cut = train_x.shape[0] - validation
            val = (train_x[cut:], train_y[cut:])
            train_x, train_y = train_x[:cut], train_y[:cut]
        out = cls(train_x, train_y, test_x, test_y, mean, std, crop_padding, pad_mode, hflip, device)
        if val is not None:
            out.val_x, out.val_y = val[0].to(out.device).contiguous(), val[1].to(out.device, torch.int64)
        return out

    # ------------------------------------------------------------------------------------------- properties

    @property
    def n_train(self) -> int:
        """Number of training images."""
        return self.train_x.shape[0]

    @property
    def n_test(self) -> int:
        """Number of test images."""
        return self.test_x.shape[0]

    @property
    def device(self) -> torch.device:
        """The device holding the data."""
        return self._device

    # ------------------------------------------------------------------------------------------- transforms

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW -> float32 ``(x / 255 - mean) / std`` (in place on one fresh buffer: same bits, fewer passes)."""
        return x.to(torch.float32, copy=True).div_(255).sub_(self._mean).div_(self._std)

    def _source_index(self, offset: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Map output positions to source positions for per-image window ``offset`` into the padded image.

        Returns ``(index (N, size), valid (N, size) or None)``; ``valid`` is False where zero padding is read.
        """
        pos = offset[:, None] + torch.arange(size, device=offset.device) - self.crop_padding  # unpadded coords
        if self.pad_mode == "reflect":
            pos = pos.abs()
            pos = torch.where(pos >= size, 2 * (size - 1) - pos, pos)
            return pos, None
        valid = (pos >= 0) & (pos < size)
        return pos.clamp(0, size - 1), valid

    def _augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random crop (pad + per-image offset) and random horizontal flip of uint8 ``x``, then normalise."""
        n, c, h, w = x.shape
        pad = self.crop_padding
        if pad == 0 and not self.hflip:
            return self.normalise(x)
        dev = x.device
        if pad > 0:
            dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
            dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
        else:
            dy = dx = torch.zeros(n, dtype=torch.int64, device=dev)
        rows, row_ok = self._source_index(dy, h)
        cols, col_ok = self._source_index(dx, w)
        if self.hflip:  # flip after crop == read the chosen window's columns in reverse order
            flip = torch.rand(n, generator=generator, device=dev) < 0.5
            cols = torch.where(flip[:, None], cols.flip(1), cols)
            if col_ok is not None:
                col_ok = torch.where(flip[:, None], col_ok.flip(1), col_ok)
        out = x.gather(2, rows[:, None, :, None].expand(n, c, h, w))
        out = out.gather(3, cols[:, None, None, :].expand(n, c, h, w))
        if row_ok is not None and col_ok is not None:
            out.mul_(row_ok[:, None, :, None] & col_ok[:, None, None, :])
        return self.normalise(out)

    def augmented_epoch(self, generator: torch.Generator) -> torch.Tensor:
        """The full normalised float32 training set with fresh random crops and flips drawn from ``generator``."""
        return self._augment(self.train_x, generator)

    # ------------------------------------------------------------------------------------------- iterators

    def train_batches(
        self, generator: torch.Generator, batch_size: int, drop_last: bool
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One shuffled, augmented training epoch as ``(images, labels)`` batches."""
        n = self.n_train
        if batch_size <= 0 or (drop_last and n < batch_size):
            raise DataError(f"batch size {batch_size} does not fit {n} training images (drop_last={drop_last})")
        x = self.augmented_epoch(generator)
        order = torch.randperm(n, generator=generator, device=self._device)
        stop = (n // batch_size) * batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            yield x.index_select(0, idx), self.train_y.index_select(0, idx)

    def eval_batches(
        self,
        split: str,
        batch_size: int,
        limit: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Deterministic-order batches of the first ``limit`` images of ``split`` (None = all).

        ``train_augmented`` applies the training augmentation (drawn from ``generator``), as LAMP's "train accuracy".
        """
        if split not in EVAL_SPLITS:
            raise ValueError(f"split must be one of {EVAL_SPLITS}, got {split!r}")
        if split == "val" and self.val_x is None:
            raise ValueError("this data has no validation split")
        xs, ys = {"test": (self.test_x, self.test_y), "val": (self.val_x, self.val_y)}.get(split, (self.train_x, self.train_y))
        if limit is not None:
            xs, ys = xs[:limit], ys[:limit]
        if split == "train_augmented":
            if generator is None:
                raise ValueError("eval_batches('train_augmented') needs a generator")
            aug = self._augment(xs, generator)
            for start in range(0, xs.shape[0], batch_size):
                yield aug[start : start + batch_size], ys[start : start + batch_size]
            return
        for start in range(0, xs.shape[0], batch_size):
            yield self.normalise(xs[start : start + batch_size]), ys[start : start + batch_size]
