"""Load: a few hundred tiny trials (tests/manifests/tiny_load.yaml, profile load: 200 runs and 100
dense pre-trainings of a second or so each) through Ray Tune into one tracking store (SQLite): exactly
one MLflow run per spec, every metric step of every run there once. The per-trial overhead of Ray
and MLflow is measured by benchmarks/bench_overhead.py (figures in benchmarks/RESULTS.md)."""

from __future__ import annotations

import time

import pytest

from harness.config.load import load
from harness.grid.expand import expand
from harness.pruning.methods import dense_spec

from tests.lab import TINY, metric_steps, procs, prunebench, tracked  # noqa: F401

pytestmark = pytest.mark.lab


def test_a_few_hundred_trials_through_ray_each_tracked_once(tmp_path, procs):
    work = tmp_path / "work"
    specs = expand(load(TINY, profile="load"))
    dense = {dense_spec(s).id for s in specs}
    assert len(specs) == 200 and len(dense) == 100
    started = time.monotonic()
    run = procs.start("run", prunebench("run", TINY, "--profile", "load", "--workdir", work, "--no-report"))
    assert run.wait(900) == 0, procs.log(run)[-3000:]
    took = time.monotonic() - started
    uri = f"sqlite:///{work / 'mlflow.db'}"
    counts, status = tracked(uri, "tinyload")
    assert set(counts) == {s.id for s in specs} | dense
    assert set(counts.values()) == {1} and set(status.values()) == {"FINISHED"}
    steps = metric_steps(uri, "tinyload")
    assert len(steps) == 200 and all(s == [0, 1, 2] for s in steps.values())  # rounds 0-2, none lost or doubled
    print(f"{len(specs) + len(dense)} trials in {took:.0f} s")
