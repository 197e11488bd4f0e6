"""The AP ci profile end to end in-process: four base methods with and without AP, pruning
cycles on the round axis, the dead-neuron rate tracked, the paired report, and the regression
check against the committed reference."""

from __future__ import annotations

import pytest

from harness import grid, report
from harness.config import expand, load
from harness.paths import Paths
from harness.tracking import Tracker

from .conftest import ROOT

REFERENCE = ROOT / "reports" / "ap" / "ci"
ACC_TOL = 5.0


@pytest.mark.e2e
def test_ap_ci_profile_end_to_end(tmp_path, data_root):
    m = load(ROOT / "paper_configs" / "ap.yaml", "ci")
    specs = expand(m)
    paths = Paths(tmp_path)
    out = grid.execute(m, specs, grid.Options(paths=paths, data_root=data_root, executor="local"),
                           log=lambda *_: None)
    assert (out.failed, out.diverged, out.ran) == ([], [], len(specs))
    tracker = Tracker(paths.tracking_uri)
    runs = [r for r in tracker.client.search_runs([tracker.client.get_experiment_by_name("ap").experiment_id])
            if r.data.tags.get("stage") == "prune"]
    assert len(runs) == len(specs) and {r.info.status for r in runs} == {"FINISHED"}
    for r in runs:
        assert 0 <= r.data.metrics["final/dead_neuron_rate"] <= 1
        steps = [h.step for h in tracker.client.get_metric_history(r.info.run_id, "round")]
        assert steps == [0, 1, 2]  # the dense model, then two pruning cycles
        retrain = [h.step for h in tracker.client.get_metric_history(r.info.run_id, "retrain/dead_neuron_rate")]
        assert sorted(retrain) == list(range(1, 9))  # every epoch of both recorded retrainings, once
    out_dir = tmp_path / "report"
    report.build(m, specs, report.collect(specs, tracker), out_dir)
    problems = report.compare(REFERENCE / "results.csv", out_dir / "results.csv", acc_tol=ACC_TOL)
    assert problems == [], "\n".join(problems)
