"""The ci profile end to end: Ray Tune, MLflow, the report, the regression check against the
committed reference, and resume after an interruption (one Ray start for the whole file)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from harness import stage, report
from harness.grid.expand import expand
from harness.paths import Paths, read_jsonl
from harness.grid.describe import run_name, run_tags
from harness.tracking import RUN_ID_TAG, Tracker
from harness.grid.execute import execute
from harness.grid.options import Options

from tests.conftest import ROOT

REFERENCE = ROOT / "reports" / "lamp" / "ci"
ACC_TOL = 5.0  # accuracy points; densities must match to 1e-6


@pytest.mark.e2e
def test_ci_profile_through_ray_mlflow_and_report(tmp_path, data_root, ci_manifest):
    import ray

    m = ci_manifest
    specs = expand(m)
    paths = Paths(tmp_path)
    tracker = Tracker(paths.tracking_uri, paths.artifact_root)

    # 1. An interrupted run: a crash after round 1, with its MLflow run left behind.
    victim = next(s for s in specs if s.method == "lamp" and s.seed == 1)
    mid = tracker.open(m.paper.key, victim, run_tags(victim, m), run_name(victim))
    ctx = stage.Context(paths=paths, data_root=data_root, report=lambda r: tracker.log_row(mid, r),
                             stop_after=("round", 1))
    with pytest.raises(stage.Interrupted):
        stage.run_spec(victim, ctx)
    tracker.close(mid, "KILLED")
    run_dir = paths.run_dir("lamp", victim.id)
    round1 = read_jsonl(run_dir / "rows.jsonl")[1]

    # 2. The same command as `prunebench run --profile ci`: finishes the grid through Ray. One more
    #    cell whose run raises (an unknown score at its first pruning step): FAILED once, not retried.
    broken = dataclasses.replace(next(s for s in specs if s.method == "lamp" and s.seed == 0), score="no_such_score")
    opts = Options(paths=paths, data_root=data_root, executor="ray")
    try:
        out = execute(m, specs + [broken], opts, log=lambda *_: None)
    finally:
        ray.shutdown()
    assert [name for name, _ in out.failed] == [run_name(broken)] and "no_such_score" in out.failed[0][1]
    assert (out.total, out.ran, out.skipped) == (11, 10, 0)
    trial_dir = next(paths.ray_results.glob(f"*-runs-*/{broken.id}"))
    assert "no_such_score" in (trial_dir / "error.txt").read_text()  # our traceback, written by the driver
    assert not (trial_dir / "error.pkl").exists()  # Tune never saw a failure: no retry of a deterministic error
    failed_run = tracker.find(m.paper.key, broken.id)
    assert failed_run.info.status == "FAILED"
    assert out.dense_trained == 1  # seed 1's dense model was cached by the interrupted run

    # 3. MLflow: one run per grid cell and per dense model, no duplicates, all finished,
    #    one metric entry per round (the interrupted run's replayed rounds were not re-logged).
    exp = tracker.client.get_experiment_by_name("lamp")
    every = tracker.client.search_runs([exp.experiment_id], max_results=1000)
    runs = [r for r in every if RUN_ID_TAG in r.data.tags and r.data.tags[RUN_ID_TAG] != broken.id]  # the grid
    assert sorted(r.info.run_name for r in every if RUN_ID_TAG not in r.data.tags) == [
        "cifar10_main · ci", "dense pre-trainings · ci"]  # the report run comes with `prunebench report`
    ids = Counter(r.data.tags[RUN_ID_TAG] for r in runs)
    assert len(runs) == 12 and max(ids.values()) == 1
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {s.id for s in specs} <= set(ids)
    for r in runs:  # no write lost, none doubled (the victim's replayed rounds included)
        steps = [0] if r.data.tags["stage"] == "dense" else [0, 1, 2, 3]
        for key in ("test_acc", "test_loss", "train_acc", "density", "round"):
            hist = tracker.client.get_metric_history(r.info.run_id, key)
            assert sorted(h.step for h in hist) == steps, (r.info.run_name, key)
        if r.data.tags["stage"] != "dense":  # the final row, once
            assert [h.step for h in tracker.client.get_metric_history(r.info.run_id, "final/test_acc")] == [0]
    prune_run = next(r for r in runs if r.data.tags["stage"] == "prune")
    tags = prune_run.data.tags
    for key in ("paper", "experiment", "method", "model", "dataset", "seed", "manifest_hash", "code_version"):
        assert tags[key], key
    assert {a.path for a in tracker.client.list_artifacts(prune_run.info.run_id)} == \
        {"spec.json", "rows.jsonl", "layer_density.csv", "graph.csv", "masks_final.pt"}

    # 4. The interrupted run resumed: round 1 was not redone.
    rows = read_jsonl(run_dir / "rows.jsonl")
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 0] and rows[1] == round1

    # 5. Report: all five methods, 3 rounds, 2 seeds; regression against the committed reference.
    out_dir = tmp_path / "report"
    summary = report.build(m, specs, report.collect(specs, tracker), out_dir)
    assert summary.n_missing_runs == 0
    text = (out_dir / "README.md").read_text()
    for method in ("global", "uniform", "uniform_plus", "erk", "lamp"):
        assert f"`{method}` | 2 |" in text
    assert "| 100% | 80.0% | 64.0% | 51.2% |" in text
    problems = report.compare(REFERENCE / "results.csv", out_dir / "results.csv", acc_tol=ACC_TOL)
    assert problems == [], "\n".join(problems)

    # 6. Re-running the finished grid does nothing (no Ray start, no new MLflow runs).
    again = execute(m, specs, opts, log=lambda *_: None)
    assert (again.ran, again.skipped) == (0, 10)
    assert len(tracker.client.search_runs([exp.experiment_id], max_results=1000)) == 14 + 1  # + the failed cell
