"""The PAGS ci profile end to end in-process: PaI baselines and the PAGS sampler, graph metrics of
every final mask in MLflow and as a per-layer CSV artifact, the paired report, and the regression
check against the committed reference."""

from __future__ import annotations

import pytest

from harness import grid, report
from harness.config import expand, load
from harness.paths import Paths
from harness.tracking import RUN_ID_TAG, Tracker

from .conftest import ROOT

REFERENCE = ROOT / "reports" / "pags" / "ci"
ACC_TOL = 5.0


@pytest.mark.e2e
def test_pags_ci_profile_end_to_end(tmp_path, data_root):
    m = load(ROOT / "paper_configs" / "pags.yaml", "ci")
    specs = expand(m)
    paths = Paths(tmp_path)
    out = grid.execute(m, specs, grid.Options(paths=paths, data_root=data_root, executor="local"),
                           log=lambda *_: None)
    assert (out.failed, out.diverged, out.ran) == ([], [], 8)
    tracker = Tracker(paths.tracking_uri)
    runs = [r for r in tracker.client.search_runs([tracker.client.get_experiment_by_name("pags").experiment_id])
            if RUN_ID_TAG in r.data.tags]
    assert len(runs) == 8 and {r.info.status for r in runs} == {"FINISHED"}
    for r in runs:
        metrics = r.data.metrics
        assert metrics["final/graph_D"] > 0 and metrics["final/graph_valid_layers"] >= 1
        assert 0.095 <= metrics["final/density"] <= 0.105
        assert "final/test_acc_at_best_val" in metrics and "val_acc" in metrics
        assert "graph.csv" in {a.path for a in tracker.client.list_artifacts(r.info.run_id)}
        if r.data.tags["method"] == "snip_pags":
            assert metrics["final/pags_distance"] > 0
    out_dir = tmp_path / "report"
    report.build(m, specs, report.collect(specs, tracker), out_dir)
    text = (out_dir / "README.md").read_text()
    assert "| `resnet34_w4` | `snip` | `snip_pags` | 2 |" in text
    problems = report.compare(REFERENCE / "results.csv", out_dir / "results.csv", acc_tol=ACC_TOL)
    assert problems == [], "\n".join(problems)
