"""Helpers of the lab-scale tests (tests/test_lab_*.py, marker ``lab``): real processes, each in
its own process group, stopped (the whole group) by the fixture that started it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TINY = ROOT / "tests" / "manifests" / "tiny_load.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def stop_group(proc: subprocess.Popen, sig=signal.SIGTERM, grace: float = 15.0) -> None:
    """Stop the process group ``proc`` leads (it was started with ``start_new_session``)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:  # stragglers of the group (its leader may be gone already)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


class Procs:
    """Processes started by one test; every group is stopped at teardown."""

    def __init__(self, tmp: Path):
        self.tmp, self.procs, self.logs = tmp, [], {}

    def start(self, name: str, args: list[str], env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
        log = self.tmp / f"{name}.log"
        f = open(log, "w")
        proc = subprocess.Popen([str(a) for a in args], stdout=f, stderr=subprocess.STDOUT, cwd=cwd or ROOT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        f.close()
        self.procs.append(proc)
        self.logs[proc.pid] = log
        return proc

    def log(self, proc: subprocess.Popen) -> str:
        return self.logs[proc.pid].read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            stop_group(proc)


@pytest.fixture
def procs(tmp_path):
    p = Procs(tmp_path)
    yield p
    p.stop_all()


def prunebench(*args) -> list[str]:
    return [str(BIN / "prunebench"), *map(str, args)]


def tracked(uri: str, paper: str) -> tuple[Counter, dict]:
    """(run id -> number of MLflow runs carrying it, run id -> status) in the paper's experiment."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(paper)
    runs = client.search_runs([exp.experiment_id], max_results=5000) if exp else []
    runs = [r for r in runs if "prunebench.run_id" in r.data.tags]
    return (Counter(r.data.tags["prunebench.run_id"] for r in runs),
            {r.data.tags["prunebench.run_id"]: r.info.status for r in runs})


def metric_steps(uri: str, paper: str, metric: str = "density") -> dict[str, list[int]]:
    """run id -> the steps of ``metric`` logged in its MLflow run (duplicates kept)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(paper)
    out = {}
    for r in client.search_runs([exp.experiment_id], max_results=5000):
        rid = r.data.tags.get("prunebench.run_id")
        if rid and r.data.tags.get("stage") == "prune":
            out[rid] = sorted(m.step for m in client.get_metric_history(r.info.run_id, metric))
    return out


def renamed_manifest(tmp: Path, key: str) -> Path:
    """The tiny manifest as another paper (its own experiment and run folders)."""
    text = re.sub(r"(?m)^  key: tinyload$", f"  key: {key}", TINY.read_text())
    path = tmp / f"{key}.yaml"
    path.write_text(text)
    return path
