"""Synthetic datasets in each source's real on-disk format (``prunebench run --smoke``, the tests): CIFAR-10/100
pickles, SVHN ``.mat`` files, Fashion-MNIST IDX files, ImageNet class folders of JPEGs (1,000 wnids, so Restricted
ImageNet's class ranges exist) and Tiny-ImageNet's archive layout, each with a few random images per class. The real
readers read them (torchvision's dataset classes, the folder listings, the JPEG decoder); only torchvision's
checksum of the real CIFAR and SVHN files cannot match (:func:`harness.data.disk.trust_files` skips it)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from harness.data.sources import source

__all__ = ["write", "WNIDS"]

WNIDS = [f"n{10_000_000 + i:08d}" for i in range(1000)]  # sorted like the real ones


def _images(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)  # NHWC


def _cifar(root: Path, rng, classes: int, per_class: int) -> None:
    top = root / ("cifar-10-batches-py" if classes == 10 else "cifar-100-python")
    top.mkdir(parents=True, exist_ok=True)
    key = "labels" if classes == 10 else "fine_labels"

    def batch(n: int) -> dict:
        labels = [i % classes for i in range(n)]
        return {"data": _images(rng, n, 32, 32).transpose(0, 3, 1, 2).reshape(n, -1), key: labels}

    n = classes * per_class
    if classes == 10:
        for i in range(1, 6):
            (top / f"data_batch_{i}").write_bytes(pickle.dumps(batch(max(n // 5, classes))))
        (top / "test_batch").write_bytes(pickle.dumps(batch(n)))
        (top / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    else:
        (top / "train").write_bytes(pickle.dumps(batch(n)))
        (top / "test").write_bytes(pickle.dumps(batch(n)))
        (top / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}))


def _svhn(root: Path, rng, per_class: int) -> None:
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    n = 10 * per_class
    for name in ("train_32x32.mat", "test_32x32.mat"):
        x = _images(rng, n, 32, 32).transpose(1, 2, 3, 0)  # SVHN's (32, 32, 3, N)
        y = np.array([[i % 10 + 1] for i in range(n)], dtype=np.uint8)  # labels 1..10 (10 is the digit 0)
        savemat(root / name, {"X": x, "y": y})


def _fashion(root: Path, rng, per_class: int) -> None:
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    n = 10 * per_class
    for prefix in ("train", "t10k"):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = np.array([i % 10 for i in range(n)], dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            np.array([2051, n, 28, 28], dtype=">i4").tobytes() + x.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(np.array([2049, n], dtype=">i4").tobytes() + y.tobytes())


def _jpeg(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, format="JPEG", quality=75)


def _imagenet(root: Path, rng, per_class: int, size: tuple[int, int] = (40, 48)) -> None:
    for split in ("train", "val"):
        for w in WNIDS:
            for j, img in enumerate(_images(rng, per_class, *size)):
                _jpeg(root / "imagenet" / split / w / f"{w}_{j}.JPEG", img)


def _tiny(root: Path, rng, per_class: int) -> None:
    base = root / "tiny-imagenet-200"
    wnids = WNIDS[:200]
    notes = []
    for w in wnids:
        for j, img in enumerate(_images(rng, per_class, 64, 64)):
            _jpeg(base / "train" / w / "images" / f"{w}_{j}.JPEG", img)
        for j, img in enumerate(_images(rng, 1, 64, 64)):
            name = f"val_{len(notes)}.JPEG"
            _jpeg(base / "val" / "images" / name, img)
            notes.append(f"{name}\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(notes) + "\n")
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")


def write(name: str, root: Path, per_class: int = 4, seed: int = 0) -> Path:
    """Write the dataset ``name`` (a registry name) under ``root`` in its real layout; returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    src = source(name)
    if name in ("cifar10", "cifar100"):
        _cifar(root, rng, src.classes, per_class)
    elif name == "svhn":
        _svhn(root, rng, per_class)
    elif name == "fashion_mnist":
        _fashion(root, rng, per_class)
    elif src.layout in ("imagefolder", "restricted_imagenet"):
        if not (root / "imagenet" / "val" / WNIDS[-1]).is_dir():  # shared by ImageNet and Restricted ImageNet
            _imagenet(root, rng, 1)
    elif src.layout == "tiny_imagenet":
        _tiny(root, rng, per_class)
    else:
        raise ValueError(f"no synthetic writer for {name}")
    return root
