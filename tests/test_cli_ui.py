"""What a person sees in the MLflow UI, checked in a real headless browser (Debian's chromium,
driven directly: ``--dump-dom`` after the page's scripts ran, ``--screenshot``). A tiny DPF grid
is run into a fresh store, its report built, the UI started on 127.0.0.1 and stopped afterwards.

Set PRUNEBENCH_UI_SCREENSHOTS=<dir> to keep the screenshots (the README's are made so)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from harness import report
from harness.cli import experiment_url, ui_command
from harness.config.load import load
from harness.grid.expand import expand
from harness.paths import Paths
from harness.tracking import Tracker
from harness.grid.execute import execute
from harness.grid.options import Options

from tests.conftest import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browse(url: str, shot: Path | None = None) -> str:
    """The DOM of ``url`` once its scripts have run (and a screenshot of it)."""
    assert CHROMIUM, "chromium is not installed: run `make install` (it installs Debian's chromium)"
    flags = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--virtual-time-budget=20000", "--window-size=1600,1100"]
    if shot is not None:
        subprocess.run(flags + [f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    return subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.fixture(scope="module")
def ui(tmp_path_factory, data_root):
    """A DPF ci grid cut to two methods and one epoch, its report, and the MLflow UI serving it."""
    work = tmp_path_factory.mktemp("ui")
    m = load(ROOT / "paper_configs" / "dpf.yaml", "ci")
    specs = [dataclasses.replace(s, training=dataclasses.replace(s.training, pretrain="1ep"))
             for s in expand(m) if s.method in ("dense", "dpf")]
    paths = Paths(work)
    out = execute(m, specs, Options(paths=paths, data_root=data_root, executor="local"),
                           log=lambda *_: None)
    assert out.failed == []
    tracker = Tracker(paths.tracking_uri)
    summary = report.build(m, specs, report.collect(specs, tracker), paths.report_dir("dpf", "ci"))
    assert summary.n_missing_runs == 0
    tracker.log_report("dpf", "ci", summary.files, "Report of the DPF ci grid (two methods, one epoch).")
    port = _free_port()
    proc = subprocess.Popen(ui_command(paths.tracking_uri, paths.artifact_root, "127.0.0.1", port),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(base, timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            raise AssertionError("the MLflow UI did not answer within 2 minutes")
        yield base, tracker, specs, paths
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _shot(name: str) -> Path | None:
    d = os.environ.get("PRUNEBENCH_UI_SCREENSHOTS")
    return Path(d) / name if d else None


@pytest.mark.ui
def test_the_experiment_opens_on_its_runs_grouped_by_paper_experiment(ui):
    base, tracker, _, _ = ui
    eid = tracker.client.get_experiment_by_name("dpf").experiment_id
    dom = _browse(experiment_url(base, eid), _shot("runs.png"))
    assert "Runs" in dom and "Detect Issues" not in dom  # the runs table, not the GenAI overview
    assert "cifar10_unstructured · ci" in dom and "report · ci" in dom  # the grid's parent run, the report run


@pytest.mark.ui
def test_a_run_page_shows_its_name_description_and_dataset(ui):
    base, tracker, specs, paths = ui
    spec = next(s for s in specs if s.method == "dpf" and s.seed == 0)
    run = tracker.find("dpf", spec.id)
    dom = _browse(f"{base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}?workflowType=machine_learning",
                  _shot("run.png"))
    assert "dpf · resnet20_w4 · fashion_mnist_ci · 90% · s0" in dom  # the readable name
    assert "Dynamic Model Pruning with Feedback" in dom and "test accuracy" in dom  # the description
    digest = json.loads((paths.run_dir("dpf", spec.id) / "data.json").read_text())["digest"]
    assert "fashion_mnist_ci" in dom and digest in dom  # the dataset input, with its digest
    assert "cifar10_unstructured · ci" in dom  # its parent run
    assert spec.id in dom and "method" in dom  # tags: the run id and the grid axes


@pytest.mark.ui
def test_the_report_renders_in_the_ui(ui):
    base, tracker, _, _ = ui
    exp = tracker.client.get_experiment_by_name("dpf")
    (rep,) = tracker.client.search_runs([exp.experiment_id], "tags.`prunebench.report` = 'ci'")
    dom = _browse(f"{base}/#/experiments/{exp.experiment_id}/runs/{rep.info.run_id}/artifacts/report/README.md"
                  f"?workflowType=machine_learning", _shot("report.png"))
    assert "Dynamic Model Pruning with Feedback" in dom and "How to read this" in dom
    assert 'role="cell"' in dom and "<code>resnet20_w4</code>" in dom  # the paper-style table, rendered
    assert "Incomplete report" not in dom
