"""The example plugin (examples/prunebench-taylor, installed in the test environment) under two papers' protocols:
``prunebench leaderboard`` over the AP and PAGS overlays in work directories where the papers' ci grids already ran.
Only the method's new cells train (the papers' own cells and dense models are reused), and the leaderboard ranks it
among each paper's methods at every cell it ran."""

from __future__ import annotations

import csv

import pytest

from harness.cli import main
from harness.tracking import RUN_ID_TAG, Tracker
from tests.conftest import ROOT

OVERLAYS = ROOT / "examples" / "prunebench-taylor" / "overlays"

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("plugin_sandbox")]


def test_leaderboard_of_the_example_method_under_two_papers(ci_grid, data_root, capsys):
    grids = {paper: ci_grid(paper) for paper in ("ap", "pags")}  # both papers' ci grids, finished, in one work dir
    work = grids["ap"][2].root
    assert grids["pags"][2].root == work and all(g[3].failed == [] for g in grids.values())
    tracker = Tracker(f"sqlite:///{work / 'mlflow.db'}")

    def tracked(paper: str) -> list:
        exp = tracker.client.get_experiment_by_name(paper).experiment_id
        return [r for r in tracker.client.search_runs([exp], max_results=1000) if RUN_ID_TAG in r.data.tags]

    before = {paper: tracked(paper) for paper in grids}
    rc = main(["leaderboard", str(OVERLAYS / "ap.yaml"), str(OVERLAYS / "pags.yaml"), "--method", "taylor",
               "--profile", "ci", "--workdir", str(work), "--data-root", str(data_root), "--executor", "local"])
    text = capsys.readouterr().out
    assert rc == 0, text
    # the papers' own cells were not re-run and no dense model was trained again: only the method's 2 + 2 cells
    assert "ap/ci+taylor: 2 run now, 16 already finished" in text
    assert "pags/ci+taylor: 2 run now, 10 already finished" in text
    for paper, (_, specs, _, _) in grids.items():
        runs = tracked(paper)
        new = [r for r in runs if r.info.run_id not in {b.info.run_id for b in before[paper]}]
        assert [r.data.tags["method"] for r in new] == ["taylor", "taylor"]
        assert all(r.data.tags["stage"] == "prune" and r.data.tags["plugins"] == "taylor==0.1.0" for r in new)
        assert {r.data.tags[RUN_ID_TAG] for r in new}.isdisjoint(s.id for s in specs)
    rows = list(csv.DictReader((work / "reports" / "leaderboard" / "taylor-ci" / "leaderboard.csv").open()))
    # AP: the cycles' rounds 1 and 2 of the ci grid (80 % and 64 % remaining), against the paper's 8 methods
    ap = [r for r in rows if r["paper"] == "ap"]
    assert {r["cell"] for r in ap} == {"80.0%", "64.0%"} and {r["other"] for r in ap} == {
        "global_mag", "global_mag_ap", "lth", "lth_ap", "lamp_cyc", "lamp_cyc_ap", "dpf_cyc", "dpf_cyc_ap"}
    assert len(ap) == 2 * 8 and all(r["metric"] == "test_acc" and r["verdict"] for r in ap)
    # PAGS: the 90 % target of the ci model, against the paper's at-init methods (not ITOP's topology experiment)
    pags = [r for r in rows if r["paper"] == "pags"]
    assert {r["experiment"] for r in pags} == {"cifar10"} and {r["cell"] for r in pags} == {"10.00%"}
    assert all(abs(float(r["density"]) - 0.1) < 1e-3 for r in pags)
    assert {r["other"] for r in pags} >= {"snip", "snip_pags", "random"} and "itop" not in {r["other"] for r in pags}
    assert all(1 <= int(r["rank"]) <= int(r["of"]) for r in rows)
    readme = (work / "reports" / "leaderboard" / "taylor-ci" / "README.md").read_text()
    assert "| `ci+taylor` | 2 |" in readme  # AP's summary line: 2 cells
    assert (work / "reports" / "ap" / "ci+taylor" / "README.md").is_file()  # each overlay's own report
    report_runs = tracker.client.search_runs([tracker.client.get_experiment_by_name("leaderboard").experiment_id])
    assert [r.info.run_name for r in report_runs] == ["report · taylor-ci"]
