"""Datasets. :mod:`.sources` is the registry (torch-free: names, classes, split sizes, file layout, reader);
:mod:`.disk` reads a split from disk (torchvision's readers, Debian's offline Fashion-MNIST); :mod:`.device` holds a
dataset on the device as uint8 with batched augmentation."""

from harness.data.sources import DEBIAN_FASHION_MNIST, SOURCES, DataError, Source, source

__all__ = ["DEBIAN_FASHION_MNIST", "SOURCES", "DataError", "Source", "source"]
