"""Per-trial overhead of Ray Tune and MLflow, on the tiny test grid (tests/manifests/tiny_load.yaml).

1. Compute alone: the grid's runs one after another in this process (stage.run_spec, no tracking).
2. Through Ray: the same grid (fresh work directory) through harness.grid.execute on a local Ray with
   one CPU (one trial at a time), tracked in SQLite. Overhead per trial = (wall - compute) / trials.
3. MLflow: the latency of opening a run and of one row (Tracker.open / Tracker.log_row) on the
   embedded SQLite store, on `mlflow server` (SQLite backend) over HTTP, and on the PostgreSQL-backed
   server of scripts/tracking-server.sh over HTTP (skipped with --no-postgres).

    .venv/bin/python benchmarks/bench_overhead.py [--seeds 10] [--rows 200] [--no-postgres]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import stage  # noqa: E402
from harness.config.load import load  # noqa: E402
from harness.grid.expand import expand  # noqa: E402
from harness.paths import Paths  # noqa: E402
from harness.tracking import Tracker  # noqa: E402
from harness.pruning.methods import dense_spec  # noqa: E402
from harness.grid.execute import execute  # noqa: E402
from harness.grid.options import Options  # noqa: E402

TINY = ROOT / "tests" / "manifests" / "tiny_load.yaml"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode})")
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


def grid(seeds: int):
    m = load(TINY, profile="load")
    keep = set(range(seeds))
    return m, [s for s in expand(m) if s.seed in keep]


def compute_alone(specs, tmp: Path) -> float:
    import torch

    torch.set_num_threads(1)
    ctx = stage.Context(paths=Paths(tmp / "alone"))
    stage.load_data(specs[0].dataset, ctx)  # data loaded once, as a reused Ray actor has it
    t = time.perf_counter()
    for s in specs:  # dense pre-trainings included (run_dense inside the procedure), as in the grid
        stage.run_spec(s, ctx)
    return time.perf_counter() - t


def through_ray(manifest, specs, tmp: Path) -> tuple[float, float]:
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=1, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    start = time.perf_counter() - t0
    opts = Options(paths=Paths(tmp / "ray"))
    t = time.perf_counter()
    out = execute(manifest, specs, opts, log=lambda *_: None)
    wall = time.perf_counter() - t
    assert not out.failed and not out.unfinished, out
    ray.shutdown()
    return start, wall


def tracker_latency(uri: str, artifact_root: Path | None, manifest, specs, rows: int) -> tuple[float, float]:
    """(ms per Tracker.open of a new run, ms per Tracker.log_row) against ``uri``."""
    tracker = Tracker(uri, artifact_root)
    tracker.experiment_id(manifest.paper.key)
    row = {"axis": "round", "density": 0.5, "density_all": 0.6, "macs_fraction": 0.4, "test_acc": 0.9,
           "test_loss": 0.3, "train_acc": 0.95, "train_loss": 0.2, "steps": 100.0, "dead_neuron_rate": 0.1}
    n_open = min(len(specs), 20)
    t = time.perf_counter()
    mids = [tracker.open(manifest.paper.key, dataclasses.replace(s, seed=10_000 + i), {"bench": "1"}, f"bench {i}")
            for i, s in enumerate(specs[:n_open])]
    t_open = (time.perf_counter() - t) / n_open
    t = time.perf_counter()
    for i in range(rows):
        tracker.log_row(mids[i % n_open], {**row, "index": i // n_open})
    t_row = (time.perf_counter() - t) / rows
    return 1000 * t_open, 1000 * t_row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10, help="seeds of the load profile (3 runs + 1 dense each)")
    ap.add_argument("--rows", type=int, default=200, help="rows logged per store")
    ap.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL-backed server")
    args = ap.parse_args()
    manifest, specs = grid(args.seeds)
    trials = len(specs) + len({dense_spec(s).id for s in specs if dense_spec(s)})
    tmp = Path(tempfile.mkdtemp(prefix="pbbench", dir="/tmp"))
    tmp.chmod(0o755)
    procs = []
    try:
        alone = compute_alone(specs, tmp)
        start, wall = through_ray(manifest, specs, tmp)
        print(f"grid: {len(specs)} runs + {trials - len(specs)} dense = {trials} trials, one at a time")
        print(f"  compute alone (in process, data loaded once): {alone:.1f} s = {1000 * alone / trials:.0f} ms/trial")
        print(f"  through Ray Tune + MLflow (SQLite): {wall:.1f} s = {1000 * wall / trials:.0f} ms/trial "
              f"(ray.init {start:.1f} s not included)")
        print(f"  overhead: {1000 * (wall - alone) / trials:.0f} ms/trial")

        stores = {"SQLite (embedded)": (f"sqlite:///{tmp / 'lat.db'}", tmp / "lat_artifacts")}
        port = _port()
        server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
                                   f"sqlite:///{tmp / 'server.db'}", "--artifacts-destination", str(tmp / "srv_art"),
                                   "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(server)
        _wait(f"http://127.0.0.1:{port}", server)
        stores["HTTP, mlflow server on SQLite"] = (f"http://127.0.0.1:{port}", None)
        pg_env = None
        if not args.no_postgres:
            pg_env = {**os.environ, "TRACKING_DIR": str(tmp / "pg"), "PG_PORT": str(_port()), "MLFLOW_PORT": str(_port())}
            subprocess.run([str(ROOT / "scripts" / "tracking-server.sh"), "start"], env=pg_env, check=True,
                           stdout=subprocess.DEVNULL)
            stores["HTTP, mlflow server on PostgreSQL"] = (f"http://127.0.0.1:{pg_env['MLFLOW_PORT']}", None)
        print(f"MLflow latency ({args.rows} rows of 10 metrics, 20 runs opened):")
        for name, (uri, art) in stores.items():
            t_open, t_row = tracker_latency(uri, art, manifest, specs, args.rows)
            print(f"  {name:<34} open {t_open:7.1f} ms/run   log_row {t_row:6.1f} ms/row")
        if pg_env is not None:
            subprocess.run([str(ROOT / "scripts" / "tracking-server.sh"), "stop"], env=pg_env,
                           stdout=subprocess.DEVNULL)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
