"""The device-resident data pipeline (common.md section 5.3).

The whole split is held on the device as uint8 NCHW.  Each epoch, random crop with padding (zeros or reflect) and
random horizontal flips are applied to all images at once by index arithmetic (two ``gather`` calls); batches are
index-gathers along a device ``randperm``.  No DataLoader, no workers, no PIL, no per-sample Python.

Zero padding is applied to the raw uint8 pixels *before* normalisation, like torchvision's
``RandomCrop(32, padding=4)`` followed by ``ToTensor`` and ``Normalize`` (a padded pixel becomes ``-mean/std``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from harness.data.disk import load_split
from harness.data.sources import DataError

__all__ = ["DeviceData", "fixed_subset", "PAD_MODES", "EVAL_SPLITS"]

PAD_MODES = ("zeros", "reflect")
EVAL_SPLITS = ("train_augmented", "train", "test", "val")


def fixed_subset(n_total: int, n: int | None) -> torch.Tensor | None:
    """Sorted indices of a fixed subset of size ``n`` (seed 0), or None for the full set."""
    if n is None:
        return None
    if not 0 <= n <= n_total:
        raise DataError(f"subset size {n} is outside 0..{n_total} (the split has {n_total} images)")
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(0))
    return perm[:n].sort().values


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

    @property
    def has_val(self) -> bool:
        return self.val_x is not None

    @property
    def n_val(self) -> int:
        return 0 if self.val_x is None else int(self.val_x.shape[0])

    def fingerprint(self) -> str:
        """A digest of the images and labels actually used (after subsets and the validation split)."""
        if self.digest is None:
            h = hashlib.sha256()
            for t in (self.train_x, self.train_y, self.test_x, self.test_y, self.val_x, self.val_y):
                if t is not None:
                    h.update(t.contiguous().cpu().numpy().tobytes())
            self.digest = h.hexdigest()[:16]
        return self.digest

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
