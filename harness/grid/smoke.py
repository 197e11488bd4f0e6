"""``prunebench run MANIFEST --smoke``: every distinct cell of a profile started and run through every stage, before
any GPU hour is spent on it.

One cell per (experiment, model, dataset, method) -- its first seed and its highest target sparsity (the others
differ only in numbers) -- at full model size, on synthetic files in each dataset's real on-disk format
(:mod:`harness.data.synthetic`, read by the real readers: torchvision's dataset classes, the folder listings, the
decoding workers), with its real schedules: each training runs its first two and its last two steps at their real
positions (the LR schedule, the sparsity schedule and every mask update see the step's index), and every
evaluation, mask decision, checkpoint and row is made; iterative procedures run their first two rounds (cycles) and
the last, which prunes to the real final density. Batches are cut to at most 4 images, evaluation to 4 images,
held-out splits to 8 images, PAGS to 2 candidates, and scores at initialisation to 3 rounds (IterSNIP, SynFlow: the
same final density) of at most 2 batches each. Everything is written to a temporary folder (runs, data) and
nothing to MLflow. A cell that fails is named with its one-line error; the others go on.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.config import RunSpec
from harness.config.specs import image_size, train_size
from harness.models import model_cost
from harness.data import synthetic
from harness.data.disk import trust_files
from harness.grid.describe import run_name
from harness.paths import Paths
from harness.pruning.methods import procedure
from harness.stage import Context, run_spec

__all__ = ["Smoke", "cells", "covering", "smoke_spec", "run"]

BATCH, EVAL, HELD_OUT = 4, 4, 8


@dataclass
class Smoke:
    name: str
    seconds: float
    error: str | None = None


def cells(specs: list[RunSpec]) -> list[RunSpec]:
    """One spec per (experiment, model, dataset, method): the first seed, the highest target sparsity."""
    chosen: dict[tuple, RunSpec] = {}
    for s in specs:
        key = (s.experiment, s.model_key, s.dataset_key, s.method)
        best = chosen.get(key)
        if best is None or (s.seed, -(s.target_sparsity or 0)) < (best.seed, -(best.target_sparsity or 0)):
            chosen[key] = s
    return list(chosen.values())


def covering(specs: list[RunSpec]) -> list[RunSpec]:
    """A few cells of ``cells(specs)`` (specs of one or several papers) that between them read every dataset source
    in its real on-disk format and run every procedure of every paper: the cheapest cell (fewest parameters) that adds
    one not covered yet (of equal sizes, the shorter run), until all are. ``make test``'s smoke; ``--smoke`` runs every cell, every model at full
    size (the ``ci`` profiles' end-to-end tests already run every method)."""

    def size(s: RunSpec) -> tuple[int, int]:  # parameters, then the training images of the full run
        cost = model_cost(s.model.arch, s.model.width, s.num_classes, image_size(s.dataset))
        return (cost[0] if cost else 1 << 62), sum(procedure(s).images(s, train_size(s.dataset)))

    def features(s: RunSpec) -> set[tuple[str, ...]]:
        return {("source", s.dataset.source), ("procedure", s.paper, s.procedure)}

    chosen, covered = [], set()
    for s in sorted(cells(specs), key=lambda s: (size(s), s.paper, s.experiment, s.method)):
        if features(s) - covered:
            chosen.append(s)
            covered |= features(s)
    return chosen


def smoke_spec(s: RunSpec) -> RunSpec:
    ds = dataclasses.replace(s.dataset, train_subset=None, test_subset=None,
                             validation=min(s.dataset.validation, HELD_OUT))
    t = dataclasses.replace(s.training, batch_size=min(s.training.batch_size, BATCH))
    ev = dataclasses.replace(s.eval, batch_size=EVAL, train_examples=EVAL, test_examples=EVAL)
    return dataclasses.replace(s, dataset=ds, training=t, eval=ev, params=procedure(s).smoke_params(s.params))


def run(specs: list[RunSpec], device: str | None = None, log: Callable[[str], None] | None = None,
        workdir: Path | None = None) -> list[Smoke]:
    """Smoke-run ``cells(specs)``; one :class:`Smoke` per cell, in order."""
    chosen = cells(specs)
    log = log or (lambda line: print(line, flush=True))
    with tempfile.TemporaryDirectory(prefix="prunebench-smoke-") as tmp:
        root = Path(workdir or tmp)
        data_root = root / "data"
        for source in sorted({s.dataset.source for s in chosen}):
            synthetic.write(source, data_root)
        out = []
        with trust_files():
            for i, s in enumerate(chosen, 1):
                name, t0 = run_name(s), time.perf_counter()
                try:
                    run_spec(smoke_spec(s), Context(paths=Paths(root / "work"), data_root=data_root, device=device,
                                                    smoke=True))
                    error = None
                except Exception as e:  # noqa: BLE001 (named and reported; the other cells go on)
                    text = str(e).strip().splitlines()
                    error = f"{type(e).__name__}: {text[0] if text else ''}"
                out.append(Smoke(name, time.perf_counter() - t0, error))
                log(f"[{i}/{len(chosen)}] {name}: {'ok' if error is None else 'FAILED: ' + error} "
                    f"({out[-1].seconds:.1f} s)")
    return out
