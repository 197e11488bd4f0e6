"""harness/data/disk.py and sources.py: offline Fashion-MNIST from Debian's package, and one-line errors for missing
or unknown datasets."""

from __future__ import annotations

from pathlib import Path
import pytest
import torch
from harness.data import DEBIAN_FASHION_MNIST, DataError
from harness.data.disk import load_split


def test_debian_fashion_mnist_is_installed() -> None:
    """`make install` provides it; the offline tests and the ci profile depend on it."""
    assert (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(), \
        "install Debian's dataset-fashion-mnist (make install does)"


def test_fashion_mnist_from_debian(data_root: Path) -> None:
    x, y = load_split("fashion_mnist", data_root, train=True)
    assert (data_root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    assert x.shape == (60000, 3, 32, 32) and x.dtype == torch.uint8
    assert y.shape == (60000,) and y.dtype == torch.int64
    assert int(y.min()) == 0 and int(y.max()) == 9
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert int(x[:, :, border].max()) == 0
    assert int(x[:, :, 2:30, 2:30].max()) > 0
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    tx, ty = load_split("fashion_mnist", data_root, train=False)
    assert tx.shape == (10000, 3, 32, 32) and tx.dtype == torch.uint8
    assert ty.shape == (10000,) and set(ty.unique().tolist()) == set(range(10))
    assert not list((data_root / "FashionMNIST" / "raw").glob("*.tmp"))


def test_missing_cifar10_message(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        load_split("cifar10", tmp_path, train=True)
    msg = str(exc.value)
    assert "\n" not in msg and str(tmp_path) in msg and "--download" in msg and "CIFAR-10" in msg


def test_unknown_dataset() -> None:
    with pytest.raises(DataError) as exc:
        load_split("imagenet1k", Path("/nonexistent"), train=True)
    assert "cifar10" in str(exc.value) and "fashion_mnist" in str(exc.value)


def test_a_streamed_source_is_not_read_whole() -> None:
    with pytest.raises(DataError, match="imagenet is streamed from its folders, not held in memory"):
        load_split("imagenet", Path("/nonexistent"), train=True)


def test_fashion_mnist_missing_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("harness.data.sources.DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(DataError) as exc:
        load_split("fashion_mnist", tmp_path, train=True)
    assert "apt-get install dataset-fashion-mnist" in str(exc.value) and "\n" not in str(exc.value)
