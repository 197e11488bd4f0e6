"""The dataset registry: every dataset's facts in one place (torch-free, so configs are validated and plans are
made without loading torch).

A :class:`Source` is one dataset as the harness reads it: its name in manifests (``datasets.<key>.source``), its
classes, the sizes of its splits before any subset, where its files live under the data root (the layout the
reader expects, for messages and the smoke tests), the reader, and how it is held: ``memory`` (the whole split on
the device as uint8, :mod:`harness.data.device`; read with a torchvision dataset class) or ``stream`` (files decoded
and augmented by worker processes while training, :mod:`harness.data.stream`; read from a folder ``layout``).

Folder layouts of the streamed sources (under the data root; README "Pointing it at your data"):

* ``imagefolder``: ``imagenet/train/<wnid>/*.JPEG`` and ``imagenet/val/<wnid>/*.JPEG`` (the ILSVRC-2012 validation
  images sorted into class folders, as torchvision's ImageFolder and most training scripts read them); the label
  is the sorted wnid's index;
* ``restricted_imagenet``: the same folders, keeping the 203 ImageNet classes of Tsipras et al. (2019)'s nine
  super-classes, with the class-index ranges (inclusive) of their released ``robustness`` library
  (:data:`RESTRICTED_IMAGENET_RANGES`); the label is the super-class;
* ``tiny_imagenet``: the archive as distributed, ``tiny-imagenet-200/train/<wnid>/images/*.JPEG`` and
  ``tiny-imagenet-200/val/images/*.JPEG`` with ``val/val_annotations.txt`` naming each image's wnid (the labelled
  validation split serves as the test split; the test split has no labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import DataError

__all__ = ["DataError", "SOURCES", "Source", "source", "DEBIAN_FASHION_MNIST", "RESTRICTED_IMAGENET_RANGES",
           "IMAGENET_MEAN", "IMAGENET_STD"]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist (offline data)


@dataclass(frozen=True)
class Source:
    name: str
    pretty: str  # the name people write
    classes: int
    train_size: int  # images of the training split, before any subset (an upper bound where marked below)
    test_size: int
    train_files: str  # where the reader looks under the data root for the training split ...
    test_files: str  # ... and for the test split
    torchvision: str = ""  # memory: the torchvision.datasets class that reads it
    holding: str = "memory"  # "memory": the whole split on the device as uint8 | "stream": read while training
    image_size: int = 32  # memory: the stored size; stream: the default training crop
    layout: str = ""  # stream: the folder layout (module docstring)
    eval_resize: int = 0  # stream: the short side evaluation images are resized to before the centre crop
    mean: tuple[float, float, float] | None = None  # the normalisation usually used with it (documentation)
    std: tuple[float, float, float] | None = None

    def files(self, root: Path, train: bool) -> Path:
        return Path(root) / (self.train_files if train else self.test_files)


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# Tsipras et al. (2019), "Robustness may be at odds with accuracy": the robustness library's
# RESTRICTED_IMAGNET_RANGES (robustness/tools/constants.py), inclusive ImageNet class-index ranges; the label is the
# position: dog, cat, frog, turtle, bird, primate, fish, crab, insect (203 classes)
RESTRICTED_IMAGENET_RANGES = ((151, 268), (281, 285), (30, 32), (33, 37), (80, 100), (365, 382), (389, 397),
                              (118, 121), (300, 319))

SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("cifar10", "CIFAR-10", 10, 50_000, 10_000, "cifar-10-batches-py", "cifar-10-batches-py", "CIFAR10"),
    Source("cifar100", "CIFAR-100", 100, 50_000, 10_000, "cifar-100-python", "cifar-100-python", "CIFAR100"),
    Source("svhn", "SVHN", 10, 73_257, 26_032, "train_32x32.mat", "test_32x32.mat", "SVHN"),
    # 28x28 grey images, zero-padded to 32x32 and replicated to 3 channels (the offline `ci` data)
    Source("fashion_mnist", "Fashion-MNIST", 10, 60_000, 10_000, "FashionMNIST/raw", "FashionMNIST/raw",
           "FashionMNIST"),
    Source("imagenet", "ImageNet (ILSVRC-2012)", 1000, 1_281_167, 50_000, "imagenet/train", "imagenet/val",
           holding="stream", image_size=224, layout="imagefolder", eval_resize=256, mean=IMAGENET_MEAN,
           std=IMAGENET_STD),
    # 203 classes of at most 1,300 training images each: 263,900 is an upper bound (the count on disk runs)
    Source("restricted_imagenet", "Restricted ImageNet", 9, 263_900, 10_150, "imagenet/train", "imagenet/val",
           holding="stream", image_size=224, layout="restricted_imagenet", eval_resize=256,
           mean=(0.4717, 0.4499, 0.3837), std=(0.2600, 0.2516, 0.2575)),
    Source("tiny_imagenet", "Tiny-ImageNet", 200, 100_000, 10_000, "tiny-imagenet-200/train",
           "tiny-imagenet-200/val", holding="stream", image_size=64, layout="tiny_imagenet", eval_resize=64,
           mean=IMAGENET_MEAN, std=IMAGENET_STD),
)}


def source(name: str) -> Source:
    if name not in SOURCES:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(SOURCES))}")
    return SOURCES[name]
