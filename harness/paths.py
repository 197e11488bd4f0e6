"""Where every artifact lives: one place that names them (OpenLTH style).

Layout under the work directory (default: the current directory):

    runs/dense/<dense_id>/        init.pt, snapshot.pt, final.pt, train.json, eval-<eval hash>.json, DONE
    runs/<paper>/<run_id>/        spec.json, checkpoint.pt, rows.jsonl, masks_final.pt,
                                  layer_density.csv, DONE
    mlflow.db, mlartifacts/       the embedded MLflow store
    data/                         datasets (torchvision layout)
    reports/<paper>/<profile>/    generated reports
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Paths:
    root: Path

    @classmethod
    def at(cls, root: str | Path | None = None) -> "Paths":
        return cls(Path(root or os.getcwd()).resolve())

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def dense_dir(self, dense_id: str) -> Path:
        return self.runs / "dense" / dense_id

    def run_dir(self, paper: str, run_id: str) -> Path:
        return self.runs / paper / run_id

    def report_dir(self, paper: str, profile: str) -> Path:
        return self.root / "reports" / paper / profile

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def ray_results(self) -> Path:
        return self.root / "ray_results"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def store_lock(self) -> Path:
        """Serialises creating MLflow experiments and runs among the drivers of this work directory."""
        return self.root / "runs" / ".store.lock"


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary name, then rename: a crash never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
