"""The papers' ci grids, each run once per session and shared (the end-to-end checks of each paper and the example
plugin's leaderboard, which adds its cells to the same work directory)."""

from __future__ import annotations

import pytest

from harness.config.load import load
from harness.grid.execute import execute
from harness.grid.expand import expand
from harness.grid.options import Options
from harness.paths import Paths
from tests.conftest import ROOT


@pytest.fixture(scope="session")
def ci_grid(tmp_path_factory, data_root):
    """paper -> (manifest, specs, paths, outcome) of the paper's ci profile, run with the local executor; every
    paper in one work directory (one MLflow store), as a lab's would be."""
    done = {}
    work = tmp_path_factory.mktemp("ci_work")

    def run(paper: str):
        if paper not in done:
            m = load(ROOT / "paper_configs" / f"{paper}.yaml", "ci")
            specs = expand(m)
            paths = Paths(work)
            out = execute(m, specs, Options(paths=paths, data_root=data_root, executor="local"), log=lambda *_: None)
            done[paper] = (m, specs, paths, out)
        return done[paper]

    return run
