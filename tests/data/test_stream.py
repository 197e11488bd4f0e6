"""harness/data/stream.py, folders.py and loading.py on synthetic files in the real layouts (harness/data/synthetic.py):
the order and augmentation are the generator's alone (workers or not, resumed or not), the ImageNet transforms'
geometry, Restricted ImageNet's super-classes and Tiny-ImageNet's validation labels, the held-out split."""

from __future__ import annotations

import pytest
import torch

from harness.config.schema import DatasetConfig
from harness.data import synthetic
from harness.data.folders import list_split
from harness.data.loading import open_data
from harness.data.sources import RESTRICTED_IMAGENET_RANGES, SOURCES, DataError
from harness.data.stream import random_resized_box

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    d = tmp_path_factory.mktemp("synthetic")
    for name in ("imagenet", "tiny_imagenet"):
        synthetic.write(name, d)
    return d


def _tiny(root, workers=0, **kw):
    ds = DatasetConfig("tiny_imagenet", MEAN, STD, 8, "zeros", True, **kw)
    data = open_data(ds, root, False, "cpu")
    data.workers = workers
    return data


def _epoch(data, seed, batch=64):
    return list(data.train_batches(torch.Generator().manual_seed(seed), batch, drop_last=False))


def test_batches_depend_on_the_generator_alone_not_the_workers(root):
    a, b = _epoch(_tiny(root, workers=0), 3), _epoch(_tiny(root, workers=2), 3)
    assert len(a) == 13 and a[0][0].shape == (64, 3, 64, 64) and a[0][0].dtype == torch.float32
    assert all(torch.equal(x, y) and torch.equal(u, v) for (x, u), (y, v) in zip(a, b))
    c = _epoch(_tiny(root), 4)
    assert not torch.equal(a[0][1], c[0][1])  # another seed, another order


def test_the_next_epoch_after_a_resume_equals_the_uninterrupted_one(root):
    data = _tiny(root)
    gen = torch.Generator().manual_seed(5)
    list(data.train_batches(gen, 100, drop_last=True))
    state = gen.get_state()
    second = list(data.train_batches(gen, 100, drop_last=True))
    again = torch.Generator()
    again.set_state(state)
    resumed = list(data.train_batches(again, 100, drop_last=True))
    assert len(second) == 8 and all(torch.equal(x, y) for (x, _), (y, _) in zip(second, resumed))


def test_pad_crop_flip_moves_the_image_within_its_padding(root):
    data = _tiny(root, train_subset=8)
    clean = next(data.eval_batches("train", 8))[0]
    aug = next(data.train_batches(torch.Generator().manual_seed(0), 8, drop_last=False))
    order = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    for i, img in zip(order.tolist(), aug[0]):
        ref = clean[i]
        hits = [(dy, dx, f) for dy in range(-8, 9) for dx in range(-8, 9) for f in (False, True)
                if torch.equal(_shift(ref.flip(-1) if f else ref, dy, dx, data.normalise), img)]
        assert hits, i


def _shift(img, dy, dx, normalise):
    """``img`` (normalised) moved by (dy, dx) with zero (raw) padding, as the crop of the padded image reads it."""
    zero = normalise(torch.zeros(1, 3, 1, 1, dtype=torch.uint8))[0]
    out = zero.expand_as(img).clone()
    h, w = img.shape[1:]
    ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
    xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[:, yd, xd] = img[:, ys, xs]
    return out


def test_resized_crop_box_covers_the_allowed_area_and_ratio_and_falls_back_to_the_centre():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = random_resized_box(300, 400, g)
        assert 0 <= top <= 300 - h and 0 <= left <= 400 - w
        assert 0.08 * 120_000 * 0.9 <= h * w <= 120_000 and 3 / 4 * 0.95 <= w / h <= 4 / 3 * 1.05
    # no crop of 99 % of the area fits the ratio: the centre crop with the ratio clamped to 4/3 (13 px of 10)
    assert random_resized_box(10, 1000, g, scale=(0.99, 1.0)) == (0, (1000 - 13) // 2, 10, 13)


def test_imagenet_train_and_eval_transforms_give_the_crop_size(root):
    ds = DatasetConfig("imagenet", MEAN, STD, 0, "zeros", True, augment="resized_crop_flip", image_size=32,
                       eval_resize=36, train_subset=16, test_subset=8)
    data = open_data(ds, root, False, "cpu")
    data.workers = 0
    x, y = next(data.train_batches(torch.Generator().manual_seed(0), 16, drop_last=True))
    assert x.shape == (16, 3, 32, 32) and y.dtype == torch.int64
    (tx, ty), = list(data.eval_batches("test", 8))
    assert tx.shape == (8, 3, 32, 32)
    again = next(data.eval_batches("test", 8))[0]
    assert torch.equal(tx, again)  # evaluation is deterministic


def test_restricted_imagenet_keeps_the_203_classes_as_nine_super_classes(root):
    paths, labels = list_split(SOURCES["restricted_imagenet"], root, True)
    assert len(paths) == 203 and sorted(set(labels)) == list(range(9))
    index = {w: i for i, w in enumerate(synthetic.WNIDS)}
    for p, label in zip(paths, labels):
        wnid_index = index[p.split("/")[-2]]
        lo, hi = RESTRICTED_IMAGENET_RANGES[label]
        assert lo <= wnid_index <= hi
    assert [labels.count(k) for k in range(9)] == [118, 5, 3, 5, 21, 18, 9, 4, 20]


def test_tiny_imagenet_validation_labels_come_from_the_annotations(root):
    paths, labels = list_split(SOURCES["tiny_imagenet"], root, False)
    notes = dict(line.split("\t")[:2] for line in
                 (root / "tiny-imagenet-200" / "val" / "val_annotations.txt").read_text().splitlines())
    wnids = sorted({w for w in notes.values()})
    assert len(paths) == 200 and all(wnids[y] == notes[p.split("/")[-1]] for p, y in zip(paths, labels))


def test_the_held_out_split_is_a_fixed_random_subset(root):
    data = _tiny(root, validation=40)
    again = _tiny(root, validation=40)
    assert (data.n_train, data.n_val) == (760, 40) and data.val.paths == again.val.paths
    assert not set(data.val.paths) & set(data.train.paths)
    assert len({p.split("/")[-3] for p in data.val.paths}) > 20  # many classes, not the last folders'
    assert data.fingerprint() == again.fingerprint() != _tiny(root).fingerprint()


def test_a_missing_layout_is_one_line(tmp_path):
    with pytest.raises(DataError, match=r"^Tiny-ImageNet not found under .* \(expected .*tiny-imagenet-200/train/"
                                        r"<wnid>/images/<image> for 200 classes \(found 0\)\); see README"):
        list_split(SOURCES["tiny_imagenet"], tmp_path, True)
    (tmp_path / "imagenet" / "train" / "n1").mkdir(parents=True)
    with pytest.raises(DataError, match=r"has 1 class folders, expected 1000"):
        list_split(SOURCES["imagenet"], tmp_path, True)
