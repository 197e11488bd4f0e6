"""The lab's tracking deployment: an MLflow server on PostgreSQL (`scripts/tracking-server.sh`, what
`make tracking-server` runs), clients over HTTP.

- LAMP's ci grid through Ray into the server: every run once, artifacts uploaded, and the report
  rebuilt from the server equals the one rebuilt from a local SQLite store;
- the MLflow server stopped and restarted mid-grid, then PostgreSQL restarted mid-grid: the
  driver waits (retries), nothing is lost, no metric step is doubled, the grid completes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from harness import stage

from tests.lab import ROOT, TINY, free_port, metric_steps, procs, prunebench, tracked, wait_for  # noqa: F401

pytestmark = pytest.mark.lab
SCRIPT = ROOT / "scripts" / "tracking-server.sh"
LAMP = ROOT / "paper_configs" / "lamp.yaml"


class Server:
    def __init__(self, directory: Path, env: dict):
        self.dir, self.env = directory, env
        self.uri = f"http://127.0.0.1:{env['MLFLOW_PORT']}"

    def __call__(self, *command: str) -> str:
        r = subprocess.run([str(SCRIPT), *command], env={**os.environ, **self.env}, capture_output=True,
                           text=True, timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout


@pytest.fixture(scope="module")
def server():
    directory = Path(tempfile.mkdtemp(prefix="pbtrack", dir="/tmp"))
    directory.chmod(0o755)  # PostgreSQL runs as `postgres` when the tests run as root
    env = {"TRACKING_DIR": str(directory), "PG_PORT": str(free_port()), "MLFLOW_PORT": str(free_port())}
    s = Server(directory, env)
    try:
        s("start")
        yield s
    finally:
        subprocess.run([str(SCRIPT), "stop"], env={**os.environ, **env}, capture_output=True, timeout=120)
        shutil.rmtree(directory, ignore_errors=True)


def test_ci_grid_through_ray_into_the_server_report_equals_local_store(tmp_path, procs, server):
    work = tmp_path / "work"
    run = procs.start("run", prunebench("run", LAMP, "--profile", "ci", "--workdir", work, "--tracking-uri", server.uri,
                                        "--no-report"))
    assert run.wait(500) == 0, procs.log(run)
    counts, status = tracked(server.uri, "lamp")
    assert len(counts) == 12 and set(counts.values()) == {1} and set(status.values()) == {"FINISHED"}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server.uri)
    one = client.search_runs([client.get_experiment_by_name("lamp").experiment_id],
                             filter_string="tags.stage = 'prune'", max_results=1)[0]
    assert "rows.jsonl" in {a.path for a in client.list_artifacts(one.info.run_id)}
    assert list((server.dir / "artifacts").rglob("rows.jsonl"))  # the server's local artifact store
    local = f"sqlite:///{tmp_path / 'local.db'}"  # the same finished runs replayed into a local store
    for args in (("run", LAMP, "--profile", "ci", "--workdir", work, "--tracking-uri", local, "--executor", "local",
                  "--no-report"),
                 ("report", LAMP, "--profile", "ci", "--workdir", work, "--tracking-uri", server.uri,
                  "--out", tmp_path / "from_server"),
                 ("report", LAMP, "--profile", "ci", "--workdir", work, "--tracking-uri", local,
                  "--out", tmp_path / "from_local")):
        r = subprocess.run(prunebench(*args), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
    for name in ("results.csv", "tables.tex", "README.md"):
        assert (tmp_path / "from_server" / name).read_text() == (tmp_path / "from_local" / name).read_text(), name


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else f"({path}: none)"


def _outage_mid_grid(tmp_path, procs, server, part: str, at_least_s: float, executor: str) -> None:
    """A slow grid into the server; after a run's second row ``part`` ("mlflow" or "db") stops, stays down at least
    ``at_least_s`` and until the driver has said the store is unavailable (when the driver next writes depends on
    where the grid is: a fixed outage can end before any write falls into it, and then nothing is tested), then
    starts again. The grid must complete with every run once, finished, every metric step once, every row sent.
    The outage is checked from outside (the API answers 5xx, times out or nothing listens); a driver that exits or stays
    silent fails the test with its stacks (SIGUSR1) and the server's and database's logs."""
    import requests

    work = tmp_path / "work"
    run = procs.start("run", prunebench("run", TINY, "--profile", "slow", "--workdir", work, "--tracking-uri",
                                        server.uri, "--no-report", "--executor", executor),
                      env={"MLFLOW_HTTP_REQUEST_TIMEOUT": "20"})  # a request left hanging is seen within a minute
    runs = work / "runs" / "tinyload"
    wait_for(lambda: any(len(stage.read_jsonl(d / "rows.jsonl")) >= 2 for d in runs.glob("*")), 240,
             "a run's second row")
    server(f"stop-{part}")
    try:
        answer = requests.get(f"{server.uri}/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                              timeout=30).status_code
    except requests.exceptions.RequestException as e:
        answer = type(e).__name__
    assert not (isinstance(answer, int) and answer < 500), f"the store still answers {answer} with {part} stopped"
    time.sleep(at_least_s)
    try:  # until the driver says so, or exits
        wait_for(lambda: "unavailable" in procs.log(run) or run.poll() is not None, 300, "the driver")
    except TimeoutError:
        os.kill(run.pid, signal.SIGUSR1)  # the silent driver's stacks into its log
        time.sleep(2)
    if "unavailable" not in procs.log(run):
        pytest.fail(f"the driver {'exited ' + str(run.returncode) if run.poll() is not None else 'was silent 300 s'}"
                    f" with {part} down (the API answered {answer}).\n--- driver:\n{_tail(procs.logs[run.pid], 80)}"
                    f"\n--- mlflow.log:\n{_tail(server.dir / 'mlflow.log')}"
                    f"\n--- postgres.log:\n{_tail(server.dir / 'postgres.log')}")
    server(f"start-{part}")
    assert run.wait(600) == 0, procs.log(run)
    log = procs.log(run)
    counts, status = tracked(server.uri, "tinyload")
    assert len(counts) == 4 and set(counts.values()) == {1} and set(status.values()) == {"FINISHED"}, log
    steps = metric_steps(server.uri, "tinyload")
    assert len(steps) == 2 and all(s == list(range(7)) for s in steps.values()), steps
    for d in runs.glob("*"):  # every row on disk reached the server
        assert len(stage.read_jsonl(d / "rows.jsonl")) == 8
    assert "unavailable" in log and "reachable again" in log, log


def test_mlflow_server_restarted_mid_grid_loses_nothing(tmp_path, procs, server):
    _outage_mid_grid(tmp_path, procs, server, "mlflow", 15, "ray")


def test_postgres_restarted_mid_grid_loses_nothing(tmp_path, procs, server):
    _outage_mid_grid(tmp_path, procs, server, "db", 10, "local")
