"""collect (tracker -> Results) and aggregation over seeds (Results -> cells), on hand-made data."""

from __future__ import annotations

import math
import statistics

import pytest

from harness import report
from harness.report import cells as cells_mod
from tests.report.fakes import (FINAL, FakeSpec, FakeTracker, experiment, expected, final_run, manifest, rounds,
                                     round_run, run, specs_for)

pytestmark = pytest.mark.usefixtures("fake_procedure")


def _cell(cs, method, axis, index, target=None, model="vgg16"):
    (c,) = [c for c in cs if (c.method, c.axis, c.index, c.target_sparsity, c.model) == (method, axis, index, target, model)]
    return c


# --------------------------------------------------------------------------- collect


def test_collect_reads_rows_status_and_divergence_tags():
    specs = [FakeSpec("main", m, "vgg16", s) for m in ("a", "b", "c") for s in (0, 1)]
    rows = {"round": {0: {"test_acc": 0.5}}, "final": {0: {"test_acc": 0.6, "density": 0.4}}}
    tracker = FakeTracker({
        specs[0].id: (rows, "FINISHED", {}),
        specs[1].id: ({"round": {0: {"test_acc": 0.5}}}, "FAILED",
                      {"prunebench.diverged": "true", "prunebench.diverged_step": "1234"}),
        specs[2].id: ({}, "RUNNING", {"prunebench.diverged": "false"}),
    })
    res = report.collect(specs, tracker)
    assert set(res) == {specs[0].id, specs[1].id, specs[2].id}  # no run, no entry
    assert [p for p, _ in tracker.asked] == ["toy"] * 6
    ok, bad, busy = res[specs[0].id], res[specs[1].id], res[specs[2].id]
    assert ok.rows == rows and ok.status == "FINISHED" and not ok.diverged and ok.diverged_step is None
    assert ok.complete and ok.row("final", 0) == {"test_acc": 0.6, "density": 0.4} and ok.row("epoch", 3) is None
    assert bad.diverged and bad.diverged_step == 1234 and bad.status == "FAILED" and bad.complete
    assert not busy.diverged and busy.status == "RUNNING" and not busy.complete


def test_planned_rows_asks_the_procedure():
    s = FakeSpec("main", "lamp", "vgg16", 0, planned=rounds(2))
    assert report.planned_rows(s) == [("round", 0), ("round", 1), ("round", 2), ("final", 0)]


# --------------------------------------------------------------------------- aggregation


def test_mean_sample_std_and_n_of_every_metric_by_hand():
    e = experiment(methods=("lamp",))
    m = manifest(e)
    s0, s1 = specs_for(e, rounds(1))
    res = {s0.id: round_run([0.70, 0.80], reactivated=[0.0, 12.0], dead_neuron_rate=[0.1, 0.2]),
           s1.id: round_run([0.72, 0.86], reactivated=[0.0, 20.0], dead_neuron_rate=[0.1, 0.4])}
    cs = report.aggregate(m, [s0, s1], res)
    assert [(c.axis, c.index) for c in cs] == [("round", 0), ("round", 1), ("final", 0)]
    c = _cell(cs, "lamp", "round", 1)
    assert (c.n, c.n_planned, c.diverged) == (2, 2, 0)
    acc = c.stat("test_acc")
    assert acc.mean == pytest.approx(0.83) and acc.n == 2
    assert acc.std == pytest.approx(statistics.stdev([0.80, 0.86])) == pytest.approx(0.06 / math.sqrt(2))
    assert acc.percent and acc.shown == pytest.approx(83.0) and acc.text() == "83.0 ± 4.2"
    assert c.stat("reactivated").mean == 16.0 and not c.stat("reactivated").percent
    assert c.stat("reactivated").text() == "16.0 ± 5.7"
    assert c.stat("dead_neuron_rate").text() == "0.300 ± 0.141"
    assert c.density == pytest.approx(0.8)
    assert c.stat("nothing_logged") == report.Stat() and c.stat("nothing_logged").text() == "—"


def test_single_seed_has_no_std_and_missing_run_keeps_its_planned_rows():
    e = experiment(methods=("global", "lamp"))
    specs = specs_for(e, rounds(2))
    res = {specs[0].id: round_run([0.7, 0.75, 0.74])}  # global seed 0 only; lamp never ran
    cs = report.aggregate(manifest(e), specs, res)
    g = _cell(cs, "global", "round", 1)
    assert g.n == 1 and g.stat("test_acc").std is None and g.stat("test_acc").text() == "75.0"
    lamp = [c for c in cs if c.method == "lamp"]
    assert [(c.axis, c.index, c.n, c.n_planned) for c in lamp] == [
        ("round", 0, 0, 2), ("round", 1, 0, 2), ("round", 2, 0, 2), ("final", 0, 0, 2)]


def test_rows_not_planned_are_kept_and_rows_are_ordered_by_axis_then_index():
    e = experiment(methods=("dpf",), seeds=(0,))
    (s,) = specs_for(e, FINAL)
    res = {s.id: run({"final": {0: {"test_acc": 0.9}}, "epoch": {10: {"test_acc": 0.5}, 2: {"test_acc": 0.3}}})}
    cs = report.aggregate(manifest(e), [s], res)
    assert [(c.axis, c.index) for c in cs] == [("epoch", 2), ("epoch", 10), ("final", 0)]


def test_cells_follow_the_manifest_order_not_the_spec_order():
    e = experiment(methods=("lamp", "global"), models=("vgg16", "resnet18"), seeds=(0,))
    specs = specs_for(e, FINAL)
    res = {s.id: final_run(0.5, 0.1) for s in specs}
    cs = report.aggregate(manifest(e), list(reversed(specs)), res)
    assert [(c.model, c.method) for c in cs] == [("vgg16", "lamp"), ("vgg16", "global"),
                                                 ("resnet18", "lamp"), ("resnet18", "global")]


def test_percent_only_for_acc_metrics_that_are_fractions():
    e = experiment(methods=("lamp",), seeds=(0,))
    (s,) = specs_for(e, FINAL)
    res = {s.id: final_run(0.9, 0.1, best_test_acc=0.95, top5_acc=97.0, test_loss=0.5)}
    c = report.aggregate(manifest(e), [s], res)[0]
    assert c.stat("test_acc").percent and c.stat("best_test_acc").percent
    assert not c.stat("top5_acc").percent and c.stat("top5_acc").text() == "97.0"  # already in percent
    assert not c.stat("test_loss").percent and not c.stat("density").percent


def test_diverged_seed_counts_from_the_first_row_it_did_not_reach():
    e = experiment(methods=("lamp",), seeds=(0, 1))
    s0, s1 = specs_for(e, rounds(3))
    bad = run({"round": {0: {"test_acc": 0.70, "density": 1.0}, 1: {"test_acc": 0.72, "density": 0.8},
                         2: {"test_acc": float("nan"), "density": 0.64}}}, status="FAILED", diverged=True, step=2500)
    res = {s0.id: round_run([0.70, 0.74, 0.76, 0.75]), s1.id: bad}
    cs = report.aggregate(manifest(e), [s0, s1], res)
    by = {(c.axis, c.index): c for c in cs}
    assert (by["round", 1].n, by["round", 1].diverged) == (2, 0)  # rows before divergence are data
    assert by["round", 1].stat("test_acc").mean == pytest.approx(0.73)
    for key in (("round", 2), ("round", 3), ("final", 0)):  # a non-finite row, rows never reached, the end
        assert (by[key].n, by[key].diverged, by[key].n_planned) == (1, 1, 2), key
    assert by["round", 2].stat("test_acc").mean == pytest.approx(0.76)  # the others are still aggregated


def test_final_row_of_a_diverged_run_is_diverged_even_if_finite():
    e = experiment(methods=("lamp",), seeds=(0,))
    (s,) = specs_for(e, FINAL)
    res = {s.id: run({"final": {0: {"test_acc": 0.1, "density": 0.1}}}, status="FAILED", diverged=True, step=3)}
    (c,) = report.aggregate(manifest(e), [s], res)
    assert (c.n, c.diverged) == (0, 1)


# --------------------------------------------------------------------------- published values


def _final_cell(method="lamp", target=0.9, model="vgg16", dataset="cifar10"):
    return report.Cell("main", dataset, model, method, target, "final", 0, 1, 1, 0,
                       {"test_acc": report.Stat(0.9, None, 1, True)})


def test_expected_matches_rounds_or_sparsities_kind_metric_and_dataset():
    e = experiment(methods=("lamp",))
    paper_r2 = expected(rounds=(2,), value=90.0)
    ref_90 = expected(sparsities=(0.9,), value=89.0, kind="reference")
    best = expected(sparsities=(0.9,), value=91.0, metric="best_test_acc")
    other_ds = expected(sparsities=(0.9,), value=50.0, datasets=("svhn",))
    m = manifest(e, expected=[paper_r2, ref_90, best, other_ds])
    round2 = report.Cell("main", "cifar10", "vgg16", "lamp", None, "round", 2, 1, 1, 0, {})
    assert report.expected_for(m, round2, "paper", "test_acc") is paper_r2
    assert report.expected_for(m, round2, "reference", "test_acc") is None
    assert report.expected_for(m, _final_cell(), "reference", "test_acc") is ref_90
    assert report.expected_for(m, _final_cell(), "paper", "test_acc") is None  # never mixed
    assert report.expected_for(m, _final_cell(), "paper", "best_test_acc") is best
    assert report.expected_for(m, _final_cell(dataset="svhn"), "paper", "test_acc") is other_ds
    assert report.expected_for(m, _final_cell(target=0.95), "reference", "test_acc") is None
    assert report.expected_for(m, _final_cell(method="global"), "reference", "test_acc") is None
    # a later entry overrides an earlier one; a dense run (no target) is sparsity 0
    later = expected(sparsities=(0.9,), value=88.0, kind="reference")
    dense = expected(methods=("dense",), sparsities=(0.0,), value=94.0)
    m = manifest(e, expected=[ref_90, later, dense])
    assert report.expected_for(m, _final_cell(), "reference", "test_acc") is later
    assert report.expected_for(m, _final_cell(method="dense", target=None), "paper", "test_acc") is dense


def test_published_difference_is_in_display_units():
    m = manifest(experiment(methods=("lamp",)), expected=[expected(sparsities=(0.9,), value=88.5, tolerance=1.0)])
    e, diff = cells_mod.published(m, _final_cell(), "paper", "test_acc")
    assert e.value == 88.5 and diff == pytest.approx(1.5) and cells_mod.outside(e, diff)
    e, diff = cells_mod.published(m, _final_cell(target=0.5), "paper", "test_acc")
    assert e is None and diff is None


def test_number_formats():
    assert report.remaining_label(1.0) == "100%" and report.remaining_label(0.8) == "80.0%"
    assert report.remaining_label(0.0352) == "3.52%" and report.remaining_label(0.00922) == "0.922%"
    assert [cells_mod.fmt(v, False) for v in (1234.5, 12.345, 1.2345, 0.5, 0.01234, 0.0)] == [
        "1234", "12.3", "1.23", "0.500", "0.0123", "0.000"]
    assert cells_mod.fmt(-0.04, True, signed=True) == "-0.0" and cells_mod.fmt(1.25, True, signed=True) == "+1.2"
    assert cells_mod.fmt(None, True) == "—"
