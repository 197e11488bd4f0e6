"""The scheduler's in-process executor and MLflow tracking, without Ray."""

from __future__ import annotations

import dataclasses

from harness import stage
from harness.grid.expand import expand
from harness.paths import Paths
from harness.grid.describe import run_name
from harness.tracking import RUN_ID_TAG, Tracker
from harness.pruning.methods import dense_spec
from harness.grid.execute import execute
from harness.grid.options import Options

from tests.conftest import shrink


def _runs(tracker: Tracker, cells_only: bool = True):
    """The grid's runs (dense and pruning), without the parent runs that group them."""
    exp = tracker.client.get_experiment_by_name("lamp")
    runs = tracker.client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if RUN_ID_TAG in r.data.tags] if cells_only else runs


def test_local_executor_tracks_every_run_and_replays_lost_tracking(tmp_path, data_root, ci_manifest, monkeypatch):
    specs = [shrink(s, rounds=2) for s in expand(ci_manifest) if s.method in ("lamp", "erk") and s.seed == 0]
    paths = Paths(tmp_path)
    opts = Options(paths=paths, data_root=data_root, executor="local")
    out = execute(ci_manifest, specs, opts, log=lambda *_: None)
    assert (out.ran, out.skipped, out.dense_trained, out.failed, out.unfinished) == (2, 0, 1, [], [])

    tracker = Tracker(paths.tracking_uri)
    runs = _runs(tracker)
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    lamp = next(r for r in runs if r.data.tags.get("method") == "lamp")
    assert lamp.data.params["training.optimizer.weight_decay"] == "0.01"
    assert lamp.data.params["params.prune_rate"] == "0.2"
    assert lamp.data.tags["profile"] == "ci" and lamp.data.tags["dense_id"] == dense_spec(specs[0]).id
    # what the MLflow UI shows: a model-training experiment, short names, parents, datasets, descriptions
    assert tracker.client.get_experiment_by_name("lamp").tags["mlflow.experimentKind"] == "custom_model_development"
    assert lamp.info.run_name == "lamp · vgg16_w8 · fashion_mnist_ci · s0"
    assert lamp.data.tags["prunebench.path"] == "cifar10_main/vgg16_w8/fashion_mnist_ci/lamp/s0"
    parents = {r.info.run_id: r for r in _runs(tracker, cells_only=False) if "prunebench.group" in r.data.tags}
    assert {p.info.run_name for p in parents.values()} == {"cifar10_main · ci", "dense pre-trainings · ci"}
    assert parents[lamp.data.tags["mlflow.parentRunId"]].info.run_name == "cifar10_main · ci"
    (ds,) = lamp.inputs.dataset_inputs
    assert ds.dataset.name == "fashion_mnist_ci" and len(ds.dataset.digest) == 16
    assert '"train": 4096' in ds.dataset.profile and '"test": 1000' in ds.dataset.profile
    note = lamp.data.tags["mlflow.note.content"]
    assert "Layer-adaptive Sparsity" in note and "Method `lamp`" in note and "seed 0" in note
    assert "test accuracy" in note and "reports/lamp/ci/README.md" in note
    before = tracker.rows(lamp.info.run_id)
    assert sorted(before) == ["final", "round"] and sorted(before["round"]) == [0, 1, 2]
    assert abs(before["round"][2]["density"] - 0.64) < 1e-3 and before["final"][0].items() >= before["round"][2].items()
    assert before["final"][0]["graph_D"] > 0  # the final mask's graph metrics
    assert lamp.data.tags["prunebench.axis"] == "round"

    # A new, empty MLflow store (lost, or a tracking server set up afterwards); the runs are
    # finished on disk: re-running logs them there without training anything.
    new_store = f"sqlite:///{tmp_path / 'other.db'}"
    opts = dataclasses.replace(opts, tracking_uri=new_store)
    trained = []
    monkeypatch.setattr(stage, "train", lambda *a, **k: trained.append(1))
    again = execute(ci_manifest, specs, opts, log=lambda *_: None)
    assert trained == [] and (again.ran, again.skipped, again.dense_trained) == (0, 2, 0)
    tracker = Tracker(new_store)
    runs = _runs(tracker)
    assert sorted(r.data.tags[RUN_ID_TAG] for r in runs) == sorted([dense_spec(specs[0]).id] + [s.id for s in specs])
    replayed = next(r for r in runs if r.data.tags.get("method") == "lamp")
    assert tracker.rows(replayed.info.run_id) == before


def test_a_failing_run_is_recorded_and_the_grid_goes_on(tmp_path, data_root, ci_manifest):
    good, bad = [shrink(s, rounds=1) for s in expand(ci_manifest) if s.seed == 0][:2]
    bad = dataclasses.replace(bad, allocation="no_such_allocation")  # fails when it first prunes
    opts = Options(paths=Paths(tmp_path), data_root=data_root, executor="local")
    out = execute(ci_manifest, [good, bad], opts, log=lambda *_: None)
    assert out.ran == 1 and len(out.failed) == 1
    name, err = out.failed[0]
    assert "unknown allocation 'no_such_allocation'" in err
    statuses = {r.data.tags[RUN_ID_TAG]: r.info.status for r in _runs(Tracker(Paths(tmp_path).tracking_uri))}
    assert statuses[good.id] == "FINISHED" and statuses[bad.id] == "FAILED"


def test_a_diverged_run_stops_at_once_is_failed_and_tagged_and_the_grid_goes_on(tmp_path, data_root, ci_manifest):
    good, bad = [shrink(s, rounds=2) for s in expand(ci_manifest) if s.seed == 1][:2]
    opt = dataclasses.replace(bad.training.optimizer, lr=1e30)
    bad = dataclasses.replace(bad, training=dataclasses.replace(bad.training, optimizer=opt))
    opts = Options(paths=Paths(tmp_path), data_root=data_root, executor="local")
    out = execute(ci_manifest, [good, bad], opts, log=lambda *_: None)
    assert out.failed == [] and out.ran == 2
    # the dense pre-training diverged, and so did the run that starts from it
    assert [name for name, _ in out.diverged] == [run_name(dense_spec(bad), bad.model_key, bad.dataset_key), run_name(bad)]
    step = out.diverged[0][1]
    assert 0 <= step < 20  # stopped during its dense pre-training (20 steps), not at the end of the grid
    runs = {r.data.tags[RUN_ID_TAG]: r for r in _runs(Tracker(Paths(tmp_path).tracking_uri))}
    assert runs[good.id].info.status == "FINISHED" and "prunebench.diverged" not in runs[good.id].data.tags
    assert runs[bad.id].info.status == "FAILED"
    assert runs[bad.id].data.tags["prunebench.diverged"] == "true"
    assert runs[bad.id].data.tags["prunebench.diverged_step"] == str(step)
    assert stage.diverged_info(Paths(tmp_path), bad) == {
        "step": step, "what": "the training loss of the dense pre-training"}
    assert stage.read_rows(Paths(tmp_path), bad)[-1] == {
        "axis": "final", "index": 0, "diverged": 1.0, "diverged_step": step}
    # final: re-running does not train it again
    again = execute(ci_manifest, [good, bad], opts, log=lambda *_: None)
    assert again.skipped == 2 and again.ran == 0 and again.diverged == []


def test_a_failed_dense_pretraining_is_not_retried_per_run(tmp_path, data_root, ci_manifest):
    specs = [shrink(s, rounds=1) for s in expand(ci_manifest) if s.method in ("lamp", "erk")]
    broken = [dataclasses.replace(s, model=dataclasses.replace(s.model, arch="no_such_model"))
              for s in specs if s.seed == 1]  # its dense pre-training fails (unknown model)
    good = [s for s in specs if s.seed == 0]
    opts = Options(paths=Paths(tmp_path), data_root=data_root, executor="local")
    out = execute(ci_manifest, good + broken, opts, log=lambda *_: None)
    assert len(out.failed) == 1 and out.failed[0][0].startswith("dense/") and "no_such_model" in out.failed[0][1]
    assert out.ran == 2 and sorted(out.unfinished) == sorted(run_name(s) for s in broken)
