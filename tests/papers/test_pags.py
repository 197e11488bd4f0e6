"""The PAGS paper's ci grid with graph metrics, and its ci profile end to end against the committed reference."""

from __future__ import annotations

import dataclasses
import pytest
from harness import stage
from harness.config.load import load
from harness.grid.expand import expand
from harness.stage import Context
from harness.paths import Paths, read_jsonl
from tests.conftest import ROOT
from harness import report
from harness.tracking import RUN_ID_TAG, Tracker


PAGS = ROOT / "paper_configs" / "pags.yaml"


def test_pags_ci_grid_runs_with_graph_metrics(tmp_path, data_root):
    m = load(PAGS, "ci")
    specs = expand(m)
    spec = next(s for s in specs if s.method == "snip_pags")
    spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, pretrain="8it"))
    rows = stage.run_spec(spec, Context(paths=Paths(tmp_path), data_root=data_root, device="cpu"))
    final = rows[-1]
    assert final["pags_distance"] > 0  # the chosen candidate's distance, with theta_0 as edge weights
    assert final["graph_D"] > 0 and final["graph_D"] != final["pags_distance"]  # re-measured on the trained weights
    assert "test_acc_at_best_val" in final and "val_acc" in rows[0]
    d = Paths(tmp_path).run_dir("pags", spec.id)
    table = (d / "graph.csv").read_text().splitlines()
    assert table[0].startswith("name,shape,") and len(table) == 1 + 37
    assert read_jsonl(d / "rows.jsonl")[-1]["density"] == pytest.approx(0.1, abs=1e-4)


REFERENCE = ROOT / "reports" / "pags" / "ci"


ACC_TOL = 5.0


@pytest.mark.e2e
def test_pags_ci_profile_end_to_end(ci_grid, tmp_path):
    m, specs, paths, out = ci_grid("pags")
    assert (out.failed, out.diverged, out.ran) == ([], [], 10)
    tracker = Tracker(paths.tracking_uri)
    ids = {s.id for s in specs}
    runs = [r for r in tracker.client.search_runs([tracker.client.get_experiment_by_name("pags").experiment_id])
            if r.data.tags.get(RUN_ID_TAG) in ids]
    assert len(runs) == 10 and {r.info.status for r in runs} == {"FINISHED"}
    topology = [r for r in runs if r.data.tags["experiment"] == "topology"]
    assert len(topology) == 2
    for r in topology:  # ITOP with snapshots: each one's distance from the initial sparse network, and its accuracy
        history = tracker.client.get_metric_history(r.info.run_id, "snapshot/graph_D")
        acc = tracker.client.get_metric_history(r.info.run_id, "snapshot/test_acc")
        assert len(history) == len(acc) >= 2 and all(m.value >= 0 for m in history)
        assert r.data.tags["method"] == "itop" and 0.08 <= r.data.metrics["final/density"] <= 0.12
    for r in (r for r in runs if r.data.tags["experiment"] != "topology"):
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
