"""Saving and loading torch objects in a run folder: written to a temporary name and renamed, so a crash never leaves
half a checkpoint (the one checkpoint format is :mod:`harness.stage`'s)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_save", "load"]


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary name, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: Path, device: torch.device | str = "cpu") -> Any:
    """What :func:`atomic_save` wrote (our own files: full unpickling)."""
    return torch.load(path, map_location=device, weights_only=False)
