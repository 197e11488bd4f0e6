"""Where every artifact lives: one place that names them (OpenLTH style). Torch-free.

Layout under the work directory (default: the current directory):

    runs/dense/<dense_id>/        spec.json, data.json, init.pt, snapshot.pt, final.pt, train.json,
                                  eval-<eval hash>.json, DONE | DIVERGED
    runs/<paper>/<run_id>/        spec.json, data.json, rows.jsonl, final.pt, masks_final.pt,
                                  layer_density.csv, graph.csv, epochs.csv, mask_choice.json,
                                  graph_reference.json, DONE | DIVERGED; checkpoint.pt while it runs
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


@dataclass(frozen=True)
class Folder:
    """The files of one run's (or dense pre-training's) folder, each named once."""

    dir: Path

    spec = property(lambda self: self.dir / "spec.json")  # the resolved spec
    data = property(lambda self: self.dir / "data.json")  # what it trained and was evaluated on (digest, sizes)
    done = property(lambda self: self.dir / "DONE")  # finished
    diverged = property(lambda self: self.dir / "DIVERGED")  # stopped: loss or weights non-finite (step, what)
    claim = property(lambda self: self.dir / ".claim")  # held by a driver (harness.locks)
    # a pruning run
    checkpoint = property(lambda self: self.dir / "checkpoint.pt")  # the one checkpoint format (harness.stage)
    rows = property(lambda self: self.dir / "rows.jsonl")  # every row, in order
    masks_final = property(lambda self: self.dir / "masks_final.pt")
    layer_density = property(lambda self: self.dir / "layer_density.csv")
    graph = property(lambda self: self.dir / "graph.csv")  # the final mask's per-layer graph metrics
    epochs = property(lambda self: self.dir / "epochs.csv")  # per-epoch values of rows that carry them (AP)
    mask_choice = property(lambda self: self.dir / "mask_choice.json")  # what choosing the mask at init measured
    graph_reference = property(lambda self: self.dir / "graph_reference.json")  # coordinates of the initial network
    final = property(lambda self: self.dir / "final.pt")  # the model a run (or dense pre-training) ends with
    # a dense pre-training
    init = property(lambda self: self.dir / "init.pt")
    snapshot = property(lambda self: self.dir / "snapshot.pt")  # the rewind point, when one is asked
    train = property(lambda self: self.dir / "train.json")

    def evaluation(self, eval_hash: str) -> Path:
        return self.dir / f"eval-{eval_hash}.json"

    def artifacts(self) -> list[Path]:
        """What a run's MLflow run keeps (those that exist)."""
        return [self.spec, self.rows, self.layer_density, self.graph, self.masks_final, self.epochs, self.diverged]


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

    def dense(self, dense_id: str) -> Folder:
        return Folder(self.dense_dir(dense_id))

    def run(self, paper: str, run_id: str) -> Folder:
        return Folder(self.run_dir(paper, run_id))

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


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
