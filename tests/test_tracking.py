"""The Tracker's row -> MLflow mapping on a real (SQLite) store: nested per-layer values and the per-epoch
evaluations of AP's recorded retraining reach MLflow, and a replayed row is not logged twice."""

from __future__ import annotations

from harness.config.load import load
from harness.grid.expand import expand
from harness.grid.describe import run_tags
from harness.tracking import Tracker


def _tracker_and_run(tmp_path):
    manifest = load("paper_configs/ap.yaml", "ci")
    spec = expand(manifest)[0]
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    mid = tracker.open("ap", spec, run_tags(spec, manifest), "a run")
    return tracker, mid


def _round(k: int, accs: list[float]) -> dict:
    epochs = [{"epoch": e + 1, "steps": 8 * (e + 1), "test_acc": a, "dead_neuron_rate": 0.5 - 0.1 * e,
               "dnr_layers": {"relu": 0.25 * e, "layer1.0.relu1": 1.0}} for e, a in enumerate(accs)]
    return {"axis": "round", "index": k, "test_acc": accs[-1], "density": 0.8 ** k,
            "dnr_layers": {"relu": 0.125 * k}, "epochs": epochs}


def test_round_rows_carry_their_retraining_epochs_on_one_continuous_axis(tmp_path):
    tracker, mid = _tracker_and_run(tmp_path)
    tracker.log_row(mid, {"axis": "round", "index": 0, "test_acc": 0.9, "density": 1.0})
    tracker.log_row(mid, _round(1, [0.5, 0.6, 0.7]))
    tracker.log_row(mid, _round(2, [0.4, 0.55, 0.65]))
    tracker.log_row(mid, _round(2, [0.0, 0.0, 0.0]))  # a replay of round 2: skipped

    def history(key):
        return [(m.step, m.value) for m in sorted(tracker.client.get_metric_history(mid, key), key=lambda m: m.step)]

    # round k's epoch e at step (k - 1) * 3 + e: cycle 1 -> 1..3, cycle 2 -> 4..6, no step twice
    assert history("retrain/test_acc") == [(1, 0.5), (2, 0.6), (3, 0.7), (4, 0.4), (5, 0.55), (6, 0.65)]
    assert history("retrain/round") == [(1, 1.0), (2, 1.0), (3, 1.0), (4, 2.0), (5, 2.0), (6, 2.0)]
    assert history("retrain/epoch") == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 1.0), (5, 2.0), (6, 3.0)]
    assert history("retrain/dnr_layers/relu") == [(s, 0.25 * ((s - 1) % 3)) for s in range(1, 7)]
    assert history("retrain/steps")[-1] == (6, 24.0)
    # the round rows themselves, per-layer values flattened to <key>/<site>
    assert history("dnr_layers/relu") == [(1, 0.125), (2, 0.25)]
    assert history("test_acc") == [(0, 0.9), (1, 0.7), (2, 0.65)]

    rows = tracker.rows(mid)
    assert sorted(rows) == ["retrain", "round"]
    assert sorted(rows["round"]) == [0, 1, 2] and rows["round"][2]["test_acc"] == 0.65
    assert rows["retrain"][5]["test_acc"] == 0.55 and rows["retrain"][5]["dnr_layers/layer1.0.relu1"] == 1.0
