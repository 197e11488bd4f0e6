"""Several drivers on one work directory (real `prunebench run` processes, the local executor).

- two manifests at once on an empty work directory (the SQLite store created once, a dense
  pre-training they share trained once): both complete, every run tracked once;
- the same manifest twice: the second exits at once with one line naming the holder, no
  duplicate work or MLflow run, nothing hangs;
- a driver killed with -9 mid-grid: the next one is not blocked and finishes the grid, reusing
  the MLflow runs the dead one opened.
"""

from __future__ import annotations

import signal
import time

import pytest

from harness.config.load import load
from harness.grid.expand import expand
from harness.locks import CLAIM_FILE

from tests.lab import TINY, procs, prunebench, renamed_manifest, stop_group, tracked, wait_for  # noqa: F401

pytestmark = pytest.mark.lab


def _ids(manifest, profile) -> set[str]:
    return {s.id for s in expand(load(manifest, profile=profile))}


def test_two_manifests_at_once_on_an_empty_workdir(tmp_path, procs):
    work = tmp_path / "work"
    other = renamed_manifest(tmp_path, "tinyother")
    a = procs.start("a", prunebench("run", TINY, "--profile", "ci", "--workdir", work, "--executor", "local"))
    b = procs.start("b", prunebench("run", other, "--profile", "ci", "--workdir", work, "--executor", "local"))
    assert a.wait(240) == 0, procs.log(a)
    assert b.wait(240) == 0, procs.log(b)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    for paper, manifest in (("tinyload", TINY), ("tinyother", other)):
        counts, status = tracked(uri, paper)
        runs = _ids(manifest, "ci")
        assert runs <= set(counts), paper
        assert set(counts.values()) == {1}, (paper, counts)  # each spec once (dense runs included)
        assert set(status.values()) == {"FINISHED"}
        assert len(counts) == len(runs) + 2  # + the two dense pre-trainings (tracked in each paper)
    for log in (procs.log(a), procs.log(b)):
        assert "Traceback" not in log and "already exists" not in log


def test_same_manifest_twice_second_exits_at_once_naming_the_holder(tmp_path, procs):
    work = tmp_path / "work"
    a = procs.start("a", prunebench("run", TINY, "--profile", "slow", "--workdir", work, "--executor", "local",
                                     "--no-report"))
    wait_for(lambda: "runs to do" in procs.log(a), 120, "the first driver to claim its runs")
    started = time.monotonic()
    b = procs.start("b", prunebench("run", TINY, "--profile", "slow", "--workdir", work, "--executor", "local",
                                     "--no-report"))
    assert b.wait(60) == 3
    took = time.monotonic() - started
    lines = [l for l in procs.log(b).splitlines() if l.startswith("prunebench")]
    assert len(lines) == 1 and f"pid {a.pid} on " in lines[0] and "another driver" in lines[0], procs.log(b)
    assert "Traceback" not in procs.log(b)
    assert a.poll() is None, "the second driver finished before the first: nothing was tested"
    assert a.wait(300) == 0, procs.log(a)
    counts, status = tracked(f"sqlite:///{work / 'mlflow.db'}", "tinyload")
    assert set(counts.values()) == {1} and len(counts) == 4 and set(status.values()) == {"FINISHED"}
    print(f"second driver exited after {took:.1f} s")


def test_driver_killed_with_sigkill_leaves_no_lock_behind(tmp_path, procs):
    work = tmp_path / "work"
    cmd = prunebench("run", TINY, "--profile", "slow", "--workdir", work, "--executor", "local", "--no-report")
    a = procs.start("a", cmd)
    wait_for(lambda: any((work / "runs" / "tinyload").glob("*/checkpoint.pt")), 180, "a first checkpoint")
    stop_group(a, signal.SIGKILL)
    assert list((work / "runs").rglob(CLAIM_FILE))  # the claim files stay: only their flocks went
    b = procs.start("b", cmd)
    assert b.wait(300) == 0, procs.log(b)
    assert "another driver" not in procs.log(b)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    counts, status = tracked(uri, "tinyload")
    assert set(counts.values()) == {1} and len(counts) == 4 and set(status.values()) == {"FINISHED"}
