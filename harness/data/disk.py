"""Reading one split of a dataset from disk as CPU tensors (uint8 ``(N, 3, 32, 32)`` images, int64 labels), through
the torchvision reader the registry names; Fashion-MNIST is taken from Debian's ``dataset-fashion-mnist`` when it is
not under the data root (no download at run time). A missing dataset is one :class:`~harness.errors.DataError` line
saying where it looked and what to do."""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import datasets
from torchvision.datasets import cifar as tv_cifar
from torchvision.datasets import svhn as tv_svhn

from harness.data import sources
from harness.data.sources import DataError, source

__all__ = ["load_split", "trust_files"]

_FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


# --------------------------------------------------------------------------------------------------- loading


def _prepare_fashion_mnist(root: Path, download: bool) -> None:
    """Make sure ``<root>/FashionMNIST/raw`` holds the four IDX files, un-gzipping Debian's copy if needed."""
    raw = root / "FashionMNIST" / "raw"
    missing = [f for f in _FASHION_FILES if not (raw / f).is_file()]
    if not missing:
        return
    debian = sources.DEBIAN_FASHION_MNIST
    gz = [debian / f"{f}.gz" for f in missing]
    if not all(s.is_file() for s in gz):
        if download:
            return  # torchvision downloads into raw/
        raise DataError(
            f"Fashion-MNIST not found under {root} (expected {raw}) nor in {debian}; "
            f"run 'apt-get install dataset-fashion-mnist' or re-run with --download"
        )
    try:
        raw.mkdir(parents=True, exist_ok=True)
        for name, src in zip(missing, gz):
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=raw)
            try:
                with os.fdopen(fd, "wb") as out, gzip.open(src, "rb") as inp:
                    shutil.copyfileobj(inp, out, length=1 << 20)
                os.replace(tmp, raw / name)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    except (OSError, EOFError) as exc:
        raise DataError(f"could not unpack Fashion-MNIST from {debian} into {raw}: {exc}") from None


@contextlib.contextmanager
def trust_files():
    """Within: torchvision's CIFAR and SVHN readers skip the checksum of the real archives' files (synthetic files in
    their format cannot match it: ``prunebench run --smoke``)."""
    modules = (tv_cifar, tv_svhn)
    saved = [m.check_integrity for m in modules]
    try:
        for m in modules:
            m.check_integrity = lambda *a, **k: True
        yield
    finally:
        for m, f in zip(modules, saved):
            m.check_integrity = f


def _torchvision_dataset(name: str, root: Path, train: bool, download: bool):
    """Instantiate the registry's torchvision dataset class (no transforms; we read its arrays directly)."""
    cls = getattr(datasets, source(name).torchvision)
    if name == "svhn":  # SVHN names its splits
        return cls(str(root), split="train" if train else "test", download=download)
    return cls(str(root), train=train, download=download)


def load_split(name: str, root: Path, train: bool, download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split as CPU tensors: images uint8 ``(N, 3, 32, 32)`` and labels int64 ``(N,)``.

    ``fashion_mnist`` is zero-padded by 2 px to 32x32 and replicated to 3 channels.
    """
    src = source(name)
    if src.holding != "memory":
        raise DataError(f"{name} is streamed from its folders, not held in memory (harness.data.loading.open_data)")
    root = Path(root).expanduser()
    pretty, expected = src.pretty, src.files(root, train)
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
