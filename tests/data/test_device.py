"""harness/data/device.py: subsets, device-resident augmentation (crop windows, flips, determinism), batches and
the clean validation split."""

from __future__ import annotations

from pathlib import Path
import pytest
import torch
import torch.nn.functional as F
from harness.data import DataError
from harness.data.device import DeviceData, fixed_subset
from harness.data.disk import load_split

from tests.tiny import FLAT_MEAN, FLAT_STD


MEAN = (0.4914, 0.4822, 0.4465)


STD = (0.247, 0.243, 0.261)


def _synthetic(n: int = 24, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 10
    return x, y


def _data(pad: int = 0, mode: str = "zeros", hflip: bool = False, n: int = 24) -> DeviceData:
    x, y = _synthetic(n)
    tx, ty = _synthetic(10, seed=2)
    return DeviceData(x, y, tx, ty, MEAN, STD, crop_padding=pad, pad_mode=mode, hflip=hflip)


def _norm(x: torch.Tensor) -> torch.Tensor:
    m = torch.tensor(MEAN).view(1, 3, 1, 1)
    s = torch.tensor(STD).view(1, 3, 1, 1)
    return (x.float() / 255 - m) / s


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _window_offsets(out: torch.Tensor, padded: torch.Tensor, pad: int) -> list[tuple[int, int]]:
    """All (dy, dx) such that ``out`` equals the 32x32 window of ``padded`` at that offset."""
    return [
        (dy, dx)
        for dy in range(2 * pad + 1)
        for dx in range(2 * pad + 1)
        if torch.equal(out, padded[:, dy : dy + 32, dx : dx + 32])
    ]


def test_device_data_load_subsets(data_root: Path) -> None:
    d = DeviceData.load(
        "fashion_mnist", data_root, False, MEAN, STD, 4, "zeros", True, train_subset=200, test_subset=50
    )
    assert (d.n_train, d.n_test) == (200, 50)
    assert d.device == torch.device("cpu") and d.train_x.dtype == torch.uint8
    full_x, _ = load_split("fashion_mnist", data_root, train=False)
    assert torch.equal(d.test_x, full_x[fixed_subset(10000, 50)])


def test_fixed_subset() -> None:
    a = fixed_subset(1000, 100)
    assert a is not None and a.shape == (100,) and a.unique().numel() == 100
    assert torch.equal(a, fixed_subset(1000, 100))
    assert torch.equal(a, a.sort().values) and int(a.max()) < 1000
    assert fixed_subset(1000, None) is None
    assert fixed_subset(5, 5).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(DataError):
        fixed_subset(10, 11)


def test_identity_without_augmentation() -> None:
    d = _data(pad=0, hflip=False)
    assert torch.equal(d.augmented_epoch(_gen()), _norm(d.train_x))


def test_flip_only() -> None:
    d = _data(pad=0, hflip=True, n=64)
    ref = _norm(d.train_x)
    out = d.augmented_epoch(_gen())
    flipped = 0
    for i in range(d.n_train):
        same, mirror = torch.equal(out[i], ref[i]), torch.equal(out[i], ref[i].flip(-1))
        assert same or mirror
        flipped += mirror and not same
    assert 0 < flipped < d.n_train


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_crop_windows(mode: str) -> None:
    pad = 4
    d = _data(pad=pad, mode=mode, hflip=False, n=64)
    torch_mode = "constant" if mode == "zeros" else "reflect"
    padded = _norm(F.pad(d.train_x.float(), (pad,) * 4, mode=torch_mode))  # pad raw pixels, then normalise
    out = d.augmented_epoch(_gen(3))
    seen = set()
    for i in range(12):
        offsets = _window_offsets(out[i], padded[i], pad)
        assert len(offsets) == 1, (i, offsets)
        seen.add(offsets[0])
    assert len(seen) >= 4


def test_crop_and_flip() -> None:
    pad = 4
    d = _data(pad=pad, hflip=True, n=64)
    padded = _norm(F.pad(d.train_x, (pad,) * 4))
    out = d.augmented_epoch(_gen(5))
    kinds = set()
    for i in range(16):
        plain = _window_offsets(out[i], padded[i], pad)
        mirrored = _window_offsets(out[i].flip(-1), padded[i], pad)
        assert len(plain) + len(mirrored) >= 1
        kinds.add(bool(mirrored) and not plain)
    assert kinds == {True, False}


def test_same_seed_same_epoch() -> None:
    d = _data(pad=4, mode="reflect", hflip=True)
    assert torch.equal(d.augmented_epoch(_gen(7)), d.augmented_epoch(_gen(7)))
    assert not torch.equal(d.augmented_epoch(_gen(7)), d.augmented_epoch(_gen(8)))


def test_train_batches_drop_last() -> None:
    d = _data(pad=4, hflip=True, n=50)
    batches = list(d.train_batches(_gen(), batch_size=16, drop_last=True))
    assert len(batches) == 3 and all(bx.shape == (16, 3, 32, 32) and by.shape == (16,) for bx, by in batches)
    assert all(bx.dtype == torch.float32 for bx, _ in batches)
    # labels are unique ids here: images covered must be distinct
    d2 = DeviceData(d.train_x, torch.arange(50), d.test_x, d.test_y, MEAN, STD, 4, "zeros", True)
    ids = torch.cat([by for _, by in d2.train_batches(_gen(), 16, drop_last=True)])
    assert ids.numel() == 48 and ids.unique().numel() == 48
    ids = torch.cat([by for _, by in d2.train_batches(_gen(), 16, drop_last=False)])
    assert sorted(ids.tolist()) == list(range(50))
    with pytest.raises(DataError):  # would otherwise be an empty epoch (an endless training loop)
        next(d.train_batches(_gen(), 64, drop_last=True))


def test_train_batches_match_epoch() -> None:
    d = _data(pad=4, hflip=True, n=30)
    g = _gen(11)
    x = d.augmented_epoch(g)
    order = torch.randperm(30, generator=g)
    bx, by = next(iter(d.train_batches(_gen(11), batch_size=8, drop_last=True)))
    assert torch.equal(bx, x[order[:8]]) and torch.equal(by, d.train_y[order[:8]])


def test_eval_batches() -> None:
    d = _data(pad=4, hflip=True, n=40)
    test = list(d.eval_batches("test", batch_size=4))
    assert [b.shape[0] for b, _ in test] == [4, 4, 2]
    assert torch.equal(torch.cat([b for b, _ in test]), _norm(d.test_x))
    train = list(d.eval_batches("train", batch_size=16, limit=20))
    assert [b.shape[0] for b, _ in train] == [16, 4]
    assert torch.equal(torch.cat([b for b, _ in train]), _norm(d.train_x[:20]))
    assert torch.equal(torch.cat([y for _, y in train]), d.train_y[:20])
    aug = list(d.eval_batches("train_augmented", batch_size=16, limit=20, generator=_gen()))
    assert [b.shape[0] for b, _ in aug] == [16, 4]
    assert torch.equal(torch.cat([y for _, y in aug]), d.train_y[:20])
    assert not torch.equal(torch.cat([b for b, _ in aug]), _norm(d.train_x[:20]))
    with pytest.raises(ValueError):
        next(d.eval_batches("train_augmented", batch_size=4))


def test_validation_split_is_the_last_images_and_evaluated_clean(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.arange(20) % 10
    d = DeviceData(x[:15], y[:15], x[:4], y[:4], FLAT_MEAN, FLAT_STD, 4, "reflect", True)
    d.val_x, d.val_y = x[15:], y[15:]
    (vx, vy), = list(d.eval_batches("val", 8))
    assert torch.equal(vy, y[15:]) and torch.equal(vx, d.normalise(x[15:]))  # no crop, no flip
