"""harness/report/leaderboard.py on hand-made runs: the method's standing against each of the paper's methods at
the same cell (ahead, within noise, behind by the claims engine's noise rule), its rank, the cells it skips, and
the files it writes."""

from __future__ import annotations

import csv

import pytest

from harness.config.schema import Layout
from harness.report import leaderboard
from tests.report.fakes import FINAL, experiment, final_run, manifest, round_run, rounds, run, specs_for

pytestmark = pytest.mark.usefixtures("fake_procedure")


def _board(accs: dict[str, list[list[float]]], layout: Layout = Layout()):
    """method -> per seed, the test accuracies of rounds 0..R (round 0 shared, as the dense model is)."""
    e = experiment(methods=tuple(accs), seeds=tuple(range(len(next(iter(accs.values()))))), layout=layout)
    m = manifest(e)
    specs = specs_for(e, rounds(len(next(iter(accs.values()))[0]) - 1))
    results = {s.id: round_run(accs[s.method][s.seed]) for s in specs}
    return m, specs, results


def test_ahead_within_noise_and_behind_by_the_noise_rule():
    # seed means at round 1: ours 0.80 (sd 0.01), far 0.70 (ahead), near 0.795 (within 2 se), best 0.90 (behind)
    m, specs, results = _board({"ours": [[0.9, 0.79], [0.9, 0.81]], "far": [[0.9, 0.69], [0.9, 0.71]],
                                "near": [[0.9, 0.785], [0.9, 0.805]], "best": [[0.9, 0.89], [0.9, 0.91]]})
    rows = leaderboard.standings(m, specs, results, {"ours"})
    assert [(r.where, r.method) for r in rows] == [("80.0%", "ours")]  # round 0 (the shared dense model) skipped
    r = rows[0]
    assert (r.of_kind("ahead"), r.of_kind("within noise"), r.of_kind("behind")) == (["far"], ["near"], ["best"])
    assert (r.rank, r.of, r.value, r.metric) == (2, 4, "80.0 ± 1.4", "test_acc")


def test_one_seed_each_side_has_no_noise_to_hide_behind():
    m, specs, results = _board({"ours": [[0.9, 0.80]], "other": [[0.9, 0.80000001]]})
    (r,) = leaderboard.standings(m, specs, results, {"ours"})
    assert r.verdicts == (("other", "80.0", "behind"),) and r.rank == 2
    m, specs, results = _board({"ours": [[0.9, 0.80]], "other": [[0.9, 0.80]]})
    (r,) = leaderboard.standings(m, specs, results, {"ours"})
    assert r.verdicts[0][2] == "within noise" and r.rank == 1  # exact equality: neither falls short


def test_a_lower_is_better_metric_turns_the_comparison():
    assert leaderboard.lower_is_better("test_loss") and leaderboard.lower_is_better("train_dnr")
    assert not leaderboard.lower_is_better("test_acc_at_best_val")
    m, specs, results = _board({"ours": [[0.5, 0.3]], "other": [[0.5, 0.4]]}, Layout(metric="dead_neuron_rate"))
    for s in specs:  # the metric: ours 0.3, the other 0.4 (fewer dead neurons is better)
        for r in results[s.id].rows["round"].values():
            r["dead_neuron_rate"] = r["test_acc"]
    (r,) = leaderboard.standings(m, specs, results, {"ours"})
    assert r.verdicts[0][2] == "ahead" and r.rank == 1


def test_targets_meet_at_their_final_rows_and_excluded_cells_are_not_compared(tmp_path):
    e = experiment(methods=("ours", "a", "b"), seeds=(0,), sparsities=(0.5, 0.9))
    m = manifest(e)
    specs = specs_for(e, FINAL, targets=(0.5, 0.9))
    acc = {("ours", 0.5): 0.7, ("a", 0.5): 0.6, ("b", 0.5): 0.8, ("ours", 0.9): 0.5, ("a", 0.9): 0.55}
    results = {s.id: final_run(acc[s.method, s.target_sparsity], 1 - s.target_sparsity) for s in specs
               if (s.method, s.target_sparsity) in acc}
    results.update({s.id: run({"final": {0: {"test_acc": float("nan"), "density": 0.1}}}, "FAILED", diverged=True)
                    for s in specs if (s.method, s.target_sparsity) == ("b", 0.9)})
    rows = leaderboard.standings(m, specs, results, {"ours"})
    assert [(r.where, r.rank, r.of, [v[0] for v in r.verdicts]) for r in rows] == [
        ("50.0%", 2, 3, ["a", "b"]), ("10.0%", 2, 2, ["a"])]  # b's diverged cell at 90 % is not compared
    board = leaderboard.Board(method={"ours"}, rows=rows, papers=[("toy", "A Toy Paper", "ci+mine")])
    assert board.counts("toy") == {"cells": 2, "best": 0, "ahead": 1, "within noise": 0, "behind": 2}
    readme, table = leaderboard.write(board, tmp_path)
    text = readme.read_text()
    assert "| A Toy Paper (`toy`) | `ci+mine` | 2 | 0 | 1 | 0 | 2 |" in text
    assert "| `cifar10` | `vgg16` | 50.0% | `ours` | 70.0 | 2/3 | `a` | — | `b` |" in text
    lines = list(csv.DictReader(table.open()))
    assert len(lines) == 3 and {(x["cell"], x["other"], x["verdict"]) for x in lines} == {
        ("50.0%", "a", "ahead"), ("50.0%", "b", "behind"), ("10.0%", "a", "behind")}
