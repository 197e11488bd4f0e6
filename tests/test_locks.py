"""harness/locks.py with real processes: the store lock holds for the whole section it guards, and a claim is held by
one driver at a time (the lab tests run whole drivers; these are the direct checks, in ``make test``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from harness.locks import Claim

ROOT = Path(__file__).resolve().parent.parent


def _start(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(procs: list[subprocess.Popen], timeout: float = 120) -> None:
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, out


GO_THEN = """
import sys, time
from pathlib import Path
go = Path(sys.argv[1])
while not go.exists():  # both processes start the section together
    time.sleep(0.01)
"""


def test_exclusive_sections_of_two_processes_never_overlap(tmp_path):
    """Each process enters, sleeps 0.3 s inside, leaves; the log never shows both inside (a lock released before
    the end of its section, or never taken, interleaves them)."""
    log, go = tmp_path / "log", tmp_path / "go"
    code = GO_THEN + """
from harness.locks import exclusive
name, lock, log = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
for _ in range(3):
    with exclusive(lock):
        with log.open("a") as f:
            f.write(f"in {name}\\n")
        time.sleep(0.3)
        with log.open("a") as f:
            f.write(f"out {name}\\n")
"""
    procs = [_start(code, str(go), name, str(tmp_path / "store.lock"), str(log)) for name in ("a", "b")]
    time.sleep(1.0)
    go.touch()
    _wait(procs)
    lines = log.read_text().split()
    events = list(zip(lines[::2], lines[1::2]))
    assert len(events) == 12
    for enter, leave in zip(events[::2], events[1::2]):  # in X, out X, in Y, out Y, ...
        assert enter[0] == "in" and leave == ("out", enter[1]), events


def test_two_processes_opening_one_spec_create_one_mlflow_run(tmp_path):
    """Two drivers open the MLflow run of the same spec at the same moment, run creation slowed to 1 s: the store
    lock covers the look-up *and* the creation, so the second finds the first's run instead of making another."""
    go, uri = tmp_path / "go", f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = GO_THEN + """
from mlflow.tracking import MlflowClient
from harness.config.load import load
from harness.grid.expand import expand
from harness.tracking import Tracker
real = MlflowClient.create_run
def slow(self, *a, **k):
    time.sleep(1.0)
    return real(self, *a, **k)
MlflowClient.create_run = slow
tracker = Tracker(sys.argv[2])
spec = expand(load("paper_configs/lamp.yaml", "ci"))[0]
print(tracker.open("lamp", spec, {"prunebench.run_id": spec.id}, "x"))
"""
    from harness.tracking import Tracker

    Tracker(uri).experiment_id("lamp")  # the store and experiment exist: the race is on the run itself
    procs = [_start(code, str(go), uri) for _ in range(2)]
    time.sleep(2.0)
    go.touch()
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    ids = {o.strip().splitlines()[-1] for o in outs}
    assert len(ids) == 1, outs
    exp = Tracker(uri).client.get_experiment_by_name("lamp")
    assert len(Tracker(uri).client.search_runs([exp.experiment_id])) == 1


def test_a_claim_is_held_by_one_process_until_it_ends(tmp_path):
    """A second process cannot take a held claim and reads who holds it; once the holder exits (however it ends),
    the claim is free."""
    code = """
import sys, time
from pathlib import Path
from harness.locks import Claim
assert Claim(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(60)
"""
    holder = _start(code, str(tmp_path))
    try:
        assert holder.stdout.readline().strip() == "held"
        other = Claim(tmp_path)
        assert not other.acquire()
        assert other.holder()["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait(30)
    assert Claim(tmp_path).acquire()
