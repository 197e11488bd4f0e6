"""The dataset registry: every dataset's facts in one place (torch-free, so configs are validated and plans are
made without loading torch).

A :class:`Source` is one dataset as the harness reads it: its name in manifests (``datasets.<key>.source``), its
classes, the sizes of its splits before any subset, where its files live under the data root (the layout the
reader expects, for messages and the smoke tests), the torchvision class that reads it, and how it is held
(``memory``: the whole split on the device as uint8).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import DataError

__all__ = ["DataError", "SOURCES", "Source", "source", "DEBIAN_FASHION_MNIST"]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist (offline data)


@dataclass(frozen=True)
class Source:
    name: str
    pretty: str  # the name people write
    classes: int
    train_size: int  # images of the training split, before any subset
    test_size: int
    train_files: str  # where the reader looks under the data root for the training split ...
    test_files: str  # ... and for the test split
    torchvision: str  # the torchvision.datasets class that reads it
    holding: str = "memory"  # the whole split on the device as uint8
    image_size: int = 32

    def files(self, root: Path, train: bool) -> Path:
        return Path(root) / (self.train_files if train else self.test_files)


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("cifar10", "CIFAR-10", 10, 50_000, 10_000, "cifar-10-batches-py", "cifar-10-batches-py", "CIFAR10"),
    Source("cifar100", "CIFAR-100", 100, 50_000, 10_000, "cifar-100-python", "cifar-100-python", "CIFAR100"),
    Source("svhn", "SVHN", 10, 73_257, 26_032, "train_32x32.mat", "test_32x32.mat", "SVHN"),
    # 28x28 grey images, zero-padded to 32x32 and replicated to 3 channels (the offline `ci` data)
    Source("fashion_mnist", "Fashion-MNIST", 10, 60_000, 10_000, "FashionMNIST/raw", "FashionMNIST/raw",
           "FashionMNIST"),
)}


def source(name: str) -> Source:
    if name not in SOURCES:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(SOURCES))}")
    return SOURCES[name]
