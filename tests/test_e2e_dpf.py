"""The DPF ci profile end to end in-process (no Ray start: the executor computes the same numbers
with the same thread count): every method of the grid, MLflow on the epoch axis, the report in
the paper's Table 1 layout and the regression check against the committed reference."""

from __future__ import annotations

import pytest

from harness import grid, report
from harness.config import expand, load
from harness.paths import Paths
from harness.tracking import RUN_ID_TAG, Tracker

from .conftest import ROOT

REFERENCE = ROOT / "reports" / "dpf" / "ci"
ACC_TOL = 5.0  # accuracy points (the same machine reproduces the reference exactly)


@pytest.mark.e2e
def test_dpf_ci_profile_end_to_end(tmp_path, data_root):
    m = load(ROOT / "paper_configs" / "dpf.yaml", "ci")
    specs = expand(m)
    assert sorted({s.method for s in specs}) == sorted(["dense", "snip", "one_shot", "incremental", "dsr",
                                                        "sparse_momentum", "dpf", "dpf_structured"])
    paths = Paths(tmp_path)
    out = grid.execute(m, specs, grid.Options(paths=paths, data_root=data_root, executor="local"),
                           log=lambda *_: None)
    assert (out.failed, out.diverged, out.ran, out.dense_trained) == ([], [], 16, 2)

    tracker = Tracker(paths.tracking_uri)
    exp = tracker.client.get_experiment_by_name("dpf")
    runs = [r for r in tracker.client.search_runs([exp.experiment_id], max_results=1000) if RUN_ID_TAG in r.data.tags]
    assert len(runs) == 18 and {r.info.status for r in runs} == {"FINISHED"}
    by_method = {r.data.tags.get("method"): r for r in runs if r.data.tags["stage"] == "prune"}
    dpf = by_method["dpf"]
    assert dpf.data.tags["prunebench.axis"] == "epoch"
    for key in ("test_acc", "density", "reactivated", "epoch"):  # one point per epoch, x-axis = epoch
        assert [h.step for h in tracker.client.get_metric_history(dpf.info.run_id, key)] == [1, 2, 3, 4, 5, 6]
    assert dpf.data.metrics["final/reactivated_total"] > 0  # the feedback path brought weights back
    assert dpf.data.metrics["final/best_test_acc"] >= dpf.data.metrics["final/test_acc"]
    assert "final/reactivated_total" not in by_method["incremental"].data.metrics

    out_dir = tmp_path / "report"
    summary = report.build(m, specs, report.collect(specs, tracker), out_dir)
    assert summary.n_missing_runs == 0
    text = (out_dir / "README.md").read_text()
    assert "| model | target | sparsity | sparsity (all) | n | dense |" in text
    problems = report.compare(REFERENCE / "results.csv", out_dir / "results.csv", acc_tol=ACC_TOL)
    assert problems == [], "\n".join(problems)
