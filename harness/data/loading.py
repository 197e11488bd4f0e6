"""Opening a run's dataset: the in-memory path for the small datasets, the streaming path for the ones that do not
fit on the device (the registry's ``holding`` decides)."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.config.schema import DatasetConfig
from harness.data.device import DeviceData, fixed_subset
from harness.data.folders import list_split
from harness.data.sources import DataError, source
from harness.data.stream import Split, StreamData

__all__ = ["open_data", "validation_positions"]


def validation_positions(n: int, validation: int) -> torch.Tensor:
    """The streamed training split's held-out positions: a fixed random subset (seed 1), sorted."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    return perm[:validation].sort().values


def open_data(ds: DatasetConfig, root: Path, download: bool, device: torch.device | str) -> DeviceData | StreamData:
    src = source(ds.source)
    if src.holding == "memory":
        return DeviceData.load(ds.source, root, download, ds.mean, ds.std, ds.crop_padding, ds.pad_mode, ds.hflip,
                               ds.train_subset, ds.test_subset, device, ds.validation)
    train, test = (Split(*map(tuple, list_split(src, root, t))) for t in (True, False))
    train = train.take(fixed_subset(len(train), ds.train_subset))
    test = test.take(fixed_subset(len(test), ds.test_subset))
    val = None
    if ds.validation:
        if not 0 < ds.validation < len(train):
            raise DataError(f"validation split of {ds.validation} images does not fit {len(train)} training images")
        held = validation_positions(len(train), ds.validation)
        keep = torch.ones(len(train), dtype=torch.bool)
        keep[held] = False
        val, train = train.take(held), train.take(keep.nonzero().flatten())
    size = ds.image_size or src.image_size
    return StreamData(train, test, src, ds.mean, ds.std, ds.augment, size, ds.eval_resize or src.eval_resize or size,
                      ds.crop_padding, ds.pad_mode, ds.hflip, device, val)
