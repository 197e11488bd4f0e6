"""Listing the files of a streamed dataset's split (the layouts of :mod:`harness.data.sources`), in a fixed order:
classes sorted by folder name, files sorted within a class. Torch-free; one :class:`DataError` line when the layout
is not there."""

from __future__ import annotations

import os
from pathlib import Path

from harness.data.sources import RESTRICTED_IMAGENET_RANGES, DataError, Source

__all__ = ["list_split", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def _images(folder: Path) -> list[str]:
    return sorted(str(folder / f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES))


def _missing(src: Source, root: Path, train: bool, what: str) -> DataError:
    return DataError(f"{src.pretty} not found under {root} (expected {src.files(root, train)}/{what}); see README "
                     f"'Pointing it at your data' for the layout")


def _class_folders(src: Source, root: Path, train: bool) -> list[Path]:
    top = src.files(root, train)
    if not top.is_dir():
        raise _missing(src, root, train, "<class folder>/<image>")
    classes = sorted(p for p in top.iterdir() if p.is_dir())
    if not classes:
        raise _missing(src, root, train, "<class folder>/<image>")
    return classes


def _imagefolder(src: Source, root: Path, train: bool) -> tuple[list[str], list[int]]:
    classes = _class_folders(src, root, train)
    if len(classes) != 1000:
        raise DataError(f"{src.pretty} under {src.files(root, train)} has {len(classes)} class folders, expected 1000 "
                        f"(the ILSVRC-2012 wnids; validation images sorted into them)")
    paths, labels = [], []
    for label, folder in enumerate(classes):
        files = _images(folder)
        paths += files
        labels += [label] * len(files)
    return paths, labels


def _restricted(src: Source, root: Path, train: bool) -> tuple[list[str], list[int]]:
    paths, labels = _imagefolder(src, root, train)
    to_super = {c: i for i, (lo, hi) in enumerate(RESTRICTED_IMAGENET_RANGES) for c in range(lo, hi + 1)}
    keep = [(p, to_super[y]) for p, y in zip(paths, labels) if y in to_super]
    return [p for p, _ in keep], [y for _, y in keep]


def _tiny(src: Source, root: Path, train: bool) -> tuple[list[str], list[int]]:
    base = src.files(root, True).parent  # tiny-imagenet-200/
    wnids = sorted(p.name for p in (base / "train").iterdir() if p.is_dir()) if (base / "train").is_dir() else []
    if len(wnids) != src.classes:
        raise _missing(src, root, True, f"<wnid>/images/<image> for {src.classes} classes (found {len(wnids)})")
    index = {w: i for i, w in enumerate(wnids)}
    if train:
        paths, labels = [], []
        for w in wnids:
            files = _images(base / "train" / w / "images")
            paths += files
            labels += [index[w]] * len(files)
        return paths, labels
    notes = base / "val" / "val_annotations.txt"
    if not notes.is_file():
        raise _missing(src, root, False, "val_annotations.txt and images/<image>")
    rows = sorted(line.split("\t")[:2] for line in notes.read_text().splitlines() if line.strip())
    for name, w in rows:
        if w not in index:
            raise DataError(f"{notes}: image {name} has wnid {w}, which is not a training class")
    return [str(base / "val" / "images" / name) for name, _ in rows], [index[w] for _, w in rows]


LAYOUTS = {"imagefolder": _imagefolder, "restricted_imagenet": _restricted, "tiny_imagenet": _tiny}


def list_split(src: Source, root: Path, train: bool) -> tuple[list[str], list[int]]:
    """(file paths, labels) of one split of a streamed source, in a fixed order."""
    paths, labels = LAYOUTS[src.layout](src, Path(root).expanduser(), train)
    if not paths:
        raise _missing(src, Path(root), train, "<images>")
    return paths, labels
