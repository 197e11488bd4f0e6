"""The scheduler's in-process executor and MLflow tracking, without Ray."""

from __future__ import annotations

import dataclasses

from harness import experiment, schedule
from harness.manifest import expand
from harness.paths import Paths
from harness.tracking import RUN_ID_TAG, Tracker, run_name

from .conftest import shrink


def _runs(tracker: Tracker):
    exp = tracker.client.get_experiment_by_name("lamp")
    return tracker.client.search_runs([exp.experiment_id], max_results=1000)


def test_local_executor_tracks_every_run_and_replays_lost_tracking(tmp_path, data_root, ci_manifest, monkeypatch):
    specs = [shrink(s, rounds=2) for s in expand(ci_manifest) if s.method in ("lamp", "erk") and s.seed == 0]
    paths = Paths(tmp_path)
    opts = schedule.Options(paths=paths, data_root=data_root, executor="local")
    out = schedule.execute(ci_manifest, specs, opts, log=lambda *_: None)
    assert (out.ran, out.skipped, out.dense_trained, out.failed, out.unfinished) == (2, 0, 1, [], [])

    tracker = Tracker(paths.tracking_uri)
    runs = _runs(tracker)
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    lamp = next(r for r in runs if r.data.tags.get("method") == "lamp")
    assert lamp.data.params["training.optimizer.weight_decay"] == "0.01"
    assert lamp.data.params["pruning.amount_per_round"] == "0.2"
    assert lamp.data.tags["profile"] == "ci" and lamp.data.tags["dense_id"] == specs[0].dense.id
    before = tracker.rows(lamp.info.run_id)
    assert sorted(before) == [0, 1, 2] and abs(before[2]["density"] - 0.64) < 1e-3

    # A new, empty MLflow store (lost, or a tracking server set up afterwards); the runs are
    # finished on disk: re-running logs them there without training anything.
    new_store = f"sqlite:///{tmp_path / 'other.db'}"
    opts = dataclasses.replace(opts, tracking_uri=new_store)
    trained = []
    monkeypatch.setattr(experiment, "train", lambda *a, **k: trained.append(1))
    again = schedule.execute(ci_manifest, specs, opts, log=lambda *_: None)
    assert trained == [] and (again.ran, again.skipped, again.dense_trained) == (0, 2, 0)
    tracker = Tracker(new_store)
    runs = _runs(tracker)
    assert sorted(r.data.tags[RUN_ID_TAG] for r in runs) == sorted([specs[0].dense.id] + [s.id for s in specs])
    replayed = next(r for r in runs if r.data.tags.get("method") == "lamp")
    assert tracker.rows(replayed.info.run_id) == before


def test_a_failing_run_is_recorded_and_the_grid_goes_on(tmp_path, data_root, ci_manifest):
    good, bad = [shrink(s, rounds=1) for s in expand(ci_manifest) if s.seed == 0][:2]
    bad = dataclasses.replace(bad, procedure="gradual")  # gradual without pruning.gradual: a ValueError
    opts = schedule.Options(paths=Paths(tmp_path), data_root=data_root, executor="local")
    out = schedule.execute(ci_manifest, [good, bad], opts, log=lambda *_: None)
    assert out.ran == 1 and len(out.failed) == 1
    name, err = out.failed[0]
    assert "needs pruning.gradual" in err
    statuses = {r.data.tags[RUN_ID_TAG]: r.info.status for r in _runs(Tracker(Paths(tmp_path).tracking_uri))}
    assert statuses[good.id] == "FINISHED" and statuses[bad.id] == "FAILED"


def test_a_failed_dense_pretraining_is_not_retried_per_run(tmp_path, data_root, ci_manifest):
    specs = [shrink(s, rounds=1) for s in expand(ci_manifest) if s.method in ("lamp", "erk")]
    broken = [dataclasses.replace(s, model=dataclasses.replace(s.model, arch="no_such_model"))
              for s in specs if s.seed == 1]  # its dense pre-training fails (unknown model)
    good = [s for s in specs if s.seed == 0]
    opts = schedule.Options(paths=Paths(tmp_path), data_root=data_root, executor="local")
    out = schedule.execute(ci_manifest, good + broken, opts, log=lambda *_: None)
    assert len(out.failed) == 1 and out.failed[0][0].startswith("dense/") and "no_such_model" in out.failed[0][1]
    assert out.ran == 2 and sorted(out.unfinished) == sorted(run_name(s) for s in broken)
