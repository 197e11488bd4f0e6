"""A real Ray cluster on this machine: a head and a second worker node (`ray start`, token
authentication with a token file of the test's own), the grid's trials placed on both nodes, a
trial worker killed with -9 mid-trial (retried, resumed from its checkpoint, no duplicate run or
metric step), and an unreachable or unauthenticated cluster refused in one line.

The cluster has its own --temp-dir, so no other Ray on the machine sees it (and `ray.init()`
elsewhere never joins it); the fixture kills both nodes' process groups at the end."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import tempfile
import threading
import time

import psutil
import pytest
import torch

from harness import stage
from harness.config.load import load
from harness.grid.expand import expand
from harness.paths import Paths

from tests.lab import BIN, TINY, Procs, metric_steps, procs, prunebench, stop_group, tracked, wait_for, free_port, wait_port  # noqa: F401

pytestmark = pytest.mark.lab


class Cluster:
    def __init__(self, address: str, env: dict, raylets: list[int], nodes: list[subprocess.Popen]):
        self.address, self.env, self.raylets, self.nodes = address, env, raylets, nodes


def _raylets(group_leader: int) -> list[int]:
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "raylet"
            and os.getpgid(p.pid) == group_leader]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """Head (1 CPU) + worker node (1 CPU) on 127.0.0.1, RAY_AUTH_MODE=token with the token file
    RAY_AUTH_TOKEN_PATH points at (as the README distributes it to every node and driver)."""
    tmp = tmp_path_factory.mktemp("cluster")
    temp_dir = tempfile.mkdtemp(prefix="pbray", dir="/tmp")  # short: Ray's socket paths
    token = tmp / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    port = free_port()
    p = Procs(tmp)
    ray = BIN / "ray"
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats", "--block"]
    try:
        head = p.start("head", [ray, "start", "--head", "--port", port, "--include-dashboard", "false",
                                "--temp-dir", temp_dir, *common], env=env)
        wait_port(port, 90, head)
        wait_for(lambda: _raylets(head.pid), 90, "the head's raylet")
        worker = p.start("worker", [ray, "start", "--address", f"127.0.0.1:{port}", *common], env=env)
        wait_for(lambda: _raylets(worker.pid), 90, "the worker node's raylet")

        def two_nodes():
            out = subprocess.run([ray, "status", "--address", f"127.0.0.1:{port}"], env={**os.environ, **env},
                                 capture_output=True, text=True, timeout=60).stdout
            return "/2.0 CPU" in out

        wait_for(two_nodes, 90, "both nodes in `ray status`", interval=2)
        yield Cluster(f"127.0.0.1:{port}", env, _raylets(head.pid) + _raylets(worker.pid), [head, worker])
    finally:
        for proc in reversed(p.procs):
            stop_group(proc, grace=5)
        subprocess.run(["rm", "-rf", temp_dir])


def _trial_workers(raylets: list[int]) -> dict[int, int]:
    """pid -> raylet pid of the Tune trial actors running now."""
    out = {}
    for proc in psutil.process_iter(["pid", "ppid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "ImplicitFunc" in cmd and proc.info["ppid"] in raylets:
            out[proc.info["pid"]] = proc.info["ppid"]
    return out


class Watch(threading.Thread):
    """Records which raylet (node) each trial actor ran under, while a grid runs."""

    def __init__(self, raylets):
        super().__init__(daemon=True)
        self.raylets, self.seen, self.stop = raylets, {}, threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.seen.update(_trial_workers(self.raylets))
            except psutil.Error:
                pass
            time.sleep(0.1)


def test_grid_runs_on_both_nodes_of_a_token_authenticated_cluster(tmp_path, procs, ray_cluster):
    work = tmp_path / "work"
    watch = Watch(ray_cluster.raylets)
    watch.start()
    run = procs.start("run", prunebench("run", TINY, "--profile", "ci", "--workdir", work,
                                        "--ray-address", ray_cluster.address), env=ray_cluster.env)
    assert run.wait(300) == 0, procs.log(run)
    watch.stop.set()
    counts, status = tracked(f"sqlite:///{work / 'mlflow.db'}", "tinyload")
    assert len(counts) == 6 and set(counts.values()) == {1} and set(status.values()) == {"FINISHED"}
    assert set(watch.seen.values()) == set(ray_cluster.raylets), f"trials ran under {watch.seen}"


def test_unreachable_or_unauthenticated_cluster_is_one_line(tmp_path, ray_cluster):
    work = tmp_path / "work"
    wrong = tmp_path / "wrong_token"
    wrong.write_text(secrets.token_hex(32))
    cases = {
        "no cluster": (f"127.0.0.1:{free_port()}", ray_cluster.env, "no Ray cluster answers"),
        "wrong token": (ray_cluster.address, {**ray_cluster.env, "RAY_AUTH_TOKEN_PATH": str(wrong)},
                        "refuses this driver's token"),
        "auth disabled here": (ray_cluster.address, {**ray_cluster.env, "RAY_AUTH_MODE": "disabled"},
                               "requires token authentication"),
    }
    for case, (address, env, expected) in cases.items():
        started = time.monotonic()
        r = subprocess.run(prunebench("run", TINY, "--profile", "ci", "--workdir", work, "--ray-address", address),
                           env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
        took = time.monotonic() - started
        lines = [l for l in r.stderr.splitlines() if l.strip() and "mlflow" not in l]
        assert r.returncode == 2, (case, r.stderr)
        assert len(lines) == 1 and lines[0].startswith("prunebench: error: ") and expected in lines[0], (case, r.stderr)
        assert "RAY_AUTH" in lines[0] or case == "no cluster"
        assert took < 30, (case, took)
    assert not (work / "mlflow.db").exists()  # refused before anything was created


def test_worker_killed_mid_trial_is_retried_and_resumes(tmp_path, procs, ray_cluster, data_root):
    work = tmp_path / "work"
    run = procs.start("run", prunebench("run", TINY, "--profile", "slow", "--workdir", work, "--no-report",
                                        "--ray-address", ray_cluster.address), env=ray_cluster.env)
    runs = work / "runs" / "tinyload"

    def mid_trial():  # a run past its second round, and the trial actors running
        done = [d for d in runs.glob("*") if len(stage.read_jsonl(d / "rows.jsonl")) >= 3]
        workers = _trial_workers(ray_cluster.raylets)
        return (done, workers) if done and workers and run.poll() is None else None

    victims, workers = wait_for(mid_trial, 240, "a trial past its second round")
    rows_before = {d.name: len(stage.read_jsonl(d / "rows.jsonl")) for d in victims}
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    assert run.wait(400) == 0, procs.log(run)
    log = procs.log(run)
    assert "retry grid/r20q/fmnist_tiny/global" in log and "FAILED" not in log, log
    uri = f"sqlite:///{work / 'mlflow.db'}"
    counts, status = tracked(uri, "tinyload")
    assert len(counts) == 4 and set(counts.values()) == {1} and set(status.values()) == {"FINISHED"}
    steps = metric_steps(uri, "tinyload")
    assert all(s == list(range(7)) for s in steps.values()), steps  # rounds 0-6, each once
    # resumed from its checkpoint: the rows written before the kill were kept, and the result equals
    # an uninterrupted run of the same spec (computed here, in this process)
    spec = next(s for s in expand(load(TINY, profile="slow")) if s.id in rows_before)
    assert rows_before[spec.id] >= 3
    torch.set_num_threads(1)  # as its trial (resources.cpu = 1): the same numbers
    ref = stage.run_spec(spec, stage.Context(paths=Paths(tmp_path / "ref"), data_root=data_root))
    got = stage.read_rows(Paths(work), spec)
    strip = lambda rows: [{k: v for k, v in r.items() if "time" not in k} for r in rows]  # noqa: E731
    assert json.dumps(strip(got), sort_keys=True) == json.dumps(strip(ref), sort_keys=True)  # NaN-safe
