"""Table layouts (by_round, by_sparsity, paired), value texts, published numbers and diverged
cells, on hand-made runs."""

from __future__ import annotations

import pytest

from harness import report
from harness.config.schema import Layout
from tests.report.fakes import (FINAL, FakeSpec, experiment, expected, final_run, manifest, round_run, rounds, run,
                                     specs_for)

pytestmark = pytest.mark.usefixtures("fake_procedure")


def _table(m, specs, res):
    (t,) = report.tables(m, report.aggregate(m, specs, res))
    return t


# --------------------------------------------------------------------------- by_round


ROUND_ACCS = {("global", 0): [0.70, 0.80, 0.78], ("global", 1): [0.72, 0.82, 0.80],
              ("lamp", 0): [0.70, 0.81, 0.79], ("lamp", 1): [0.72, 0.83, 0.81]}


def _by_round(e, expect=(), diverge=None):
    m = manifest(e, expected=expect)
    specs = specs_for(e, rounds(2))
    res = {s.id: round_run(ROUND_ACCS[s.method, s.seed], reactivated=[0, 3, 5], best_test_acc=[0.75, 0.85, 0.83])
           for s in specs}
    if diverge:
        s = next(s for s in specs if (s.method, s.seed) == diverge)
        rows = round_run(ROUND_ACCS[diverge]).rows["round"]
        res[s.id] = run({"round": {0: rows[0], 1: rows[1]}}, status="FAILED", diverged=True, step=99)
    return m, specs, res


def test_by_round_keeps_the_lamp_table_with_paper_and_reference_values():
    e = experiment()
    m, specs, res = _by_round(e, [expected(rounds=(1,), value=None),
                                  expected(rounds=(2,), value=81.0, tolerance=0.5),
                                  expected(rounds=(2,), value=79.5, kind="reference")])
    t = _table(m, specs, res)
    assert t.header == ["model", "method", "n", "100%", "80.0%", "64.0%"]
    assert t.rows == [
        ["vgg16", "global", "2", "71.0 ± 1.4", "81.0 ± 1.4", "79.0 ± 1.4"],
        ["vgg16", "lamp", "2", "71.0 ± 1.4", "82.0 ± 1.4 (paper —)",
         "80.0 ± 1.4 (paper 81.0, Δ -1.0 ✗; reference 79.5, Δ +0.5)"]]
    assert t.align == "llrccc" and t.code == (0, 1) and t.note == ""


def test_by_round_with_several_datasets_and_disagreeing_densities():
    e = experiment(datasets=("cifar10", "svhn"), methods=("lamp",), seeds=(0,))
    m = manifest(e)
    specs = specs_for(e, rounds(1))
    res = {s.id: round_run([0.7, 0.8], [1.0, 0.8 if s.dataset_key == "cifar10" else 0.5]) for s in specs}
    t = _table(m, specs, res)
    assert t.header == ["dataset", "model", "method", "n", "100%", "round 1"]
    assert [r[:3] for r in t.rows] == [["cifar10", "vgg16", "lamp"], ["svhn", "vgg16", "lamp"]]
    assert t.code == (0, 1, 2)


def test_diverged_cell_is_never_a_number():
    m, specs, res = _by_round(experiment(), diverge=("lamp", 1))
    t = _table(m, specs, res)
    assert t.rows[1] == ["vgg16", "lamp", "1–2", "71.0 ± 1.4", "82.0 ± 1.4", "diverged (1/2)"]


def test_layout_metric_and_extra_columns():
    e = experiment(methods=("lamp",), layout=Layout(metric="best_test_acc", columns=("reactivated",)))
    m, specs, res = _by_round(e)
    t = _table(m, specs, res)
    assert t.header == ["model", "method", "n", "100%", "100% reactivated", "80.0%", "80.0% reactivated",
                        "64.0%", "64.0% reactivated"]
    assert t.rows == [["vgg16", "lamp", "2", "75.0 ± 0.0", "0.000 ± 0.000", "85.0 ± 0.0", "3.00 ± 0.00",
                       "83.0 ± 0.0", "5.00 ± 0.00"]]
    assert t.note == "Cell value: `best_test_acc` (%); extra columns: `reactivated`."


# --------------------------------------------------------------------------- by_sparsity


def _dpf(dense_method="dense"):
    e = experiment(methods=("dense", "snip", "dpf"), models=("resnet20", "wrn28_2"),
                   layout=Layout(kind="by_sparsity", dense_method=dense_method), sparsities=(0.5, 0.9))
    targets = {"resnet20": (0.9,), "wrn28_2": (0.5, 0.9)}
    specs = [FakeSpec("main", meth, model, seed, "cifar10", None if meth == "dense" else t, FINAL)
             for model in e.models for meth in e.methods for t in ((None,) if meth == "dense" else targets[model])
             for seed in e.seeds]
    acc = {"dense": 0.92, "snip": 0.88, "dpf": 0.90}
    res = {}
    for s in specs:
        if s.method == "dense":
            res[s.id] = final_run(acc["dense"] + 0.01 * s.seed, 1.0)
        else:
            dens = 1 - s.target_sparsity + (0.001 if (s.method, s.model_key, s.target_sparsity) == ("snip", "wrn28_2", 0.5) else 0)
            res[s.id] = final_run(acc[s.method] + 0.01 * s.seed - s.target_sparsity / 10 + 0.09, dens, dens + 0.005)
    return e, specs, res


def test_by_sparsity_rows_per_model_and_target_with_dense_and_published_values():
    e, specs, res = _dpf()
    m = manifest(e, expected=[
        expected(models=("resnet20",), methods=("dpf",), sparsities=(0.9,), value=90.0),
        expected(models=("resnet20",), methods=("snip",), sparsities=(0.9,), value=88.0, kind="reference"),
        expected(models=("resnet20",), methods=("dense",), sparsities=(0.0,), value=92.0)])
    t = _table(m, specs, res)
    assert t.header == ["model", "target", "sparsity", "sparsity (all)", "n", "dense", "snip", "dpf"]
    assert t.rows == [
        ["resnet20", "90%", "90.00%", "89.50%", "2", "92.5 ± 0.7 (paper 92.0, Δ +0.5)",
         "88.5 ± 0.7 (reference 88.0, Δ +0.5)", "90.5 ± 0.7 (paper 90.0, Δ +0.5)"],
        ["wrn28_2", "50%", "49.90–50.00%", "49.40–49.50%", "2", "92.5 ± 0.7", "92.5 ± 0.7", "94.5 ± 0.7"],
        ["wrn28_2", "90%", "90.00%", "89.50%", "2", "92.5 ± 0.7", "88.5 ± 0.7", "90.5 ± 0.7"]]
    assert t.align == "lrrrrccc" and t.code == (0,)


def test_by_sparsity_dense_from_round_zero_and_diverged_seed():
    e = experiment(methods=("oneshot", "dpf"), layout=Layout(kind="by_sparsity"), sparsities=(0.9,))
    specs = specs_for(e, (("round", 0), ("round", 1), ("final", 0)), targets=(0.9,))
    res = {}
    for s in specs:
        dense, pruned = {"test_acc": 0.93 + 0.01 * s.seed, "density": 1.0}, {"test_acc": 0.9, "density": 0.1}
        res[s.id] = run({"round": {0: dense, 1: pruned}, "final": {0: pruned}})
    bad = next(s for s in specs if s.method == "dpf" and s.seed == 1)
    res[bad.id] = run({"round": {0: {"test_acc": 0.93, "density": 1.0}}}, status="FAILED", diverged=True, step=12)
    t = _table(manifest(e), specs, res)
    assert t.header == ["model", "target", "sparsity", "sparsity (all)", "n", "dense", "oneshot", "dpf"]
    assert t.rows == [["vgg16", "90%", "90.00%", "—", "1–2", "93.5 ± 0.7", "90.0 ± 0.0", "diverged (1/2)"]]


def test_by_sparsity_without_dense_source_has_no_dense_column():
    e = experiment(methods=("snip",), layout=Layout(kind="by_sparsity"), seeds=(0,))
    specs = specs_for(e, FINAL, targets=(0.9,))
    t = _table(manifest(e), specs, {specs[0].id: final_run(0.8, 0.1)})
    assert t.header == ["model", "target", "sparsity", "sparsity (all)", "n", "snip"]
    assert t.rows == [["vgg16", "90%", "90.00%", "90.00%", "1", "80.0"]]


# --------------------------------------------------------------------------- paired


def test_paired_by_round_with_delta_and_extra_metric():
    e = experiment(methods=("lamp", "lamp_ap", "global", "global_ap"),
                   layout=Layout(kind="paired", pairs=(("lamp", "lamp_ap"), ("global", "global_ap")),
                                 columns=("dead_neuron_rate",)))
    specs = specs_for(e, rounds(1))
    acc = {"lamp": 0.80, "lamp_ap": 0.82, "global": 0.78, "global_ap": 0.775}
    res = {s.id: round_run([0.9, acc[s.method] + 0.01 * s.seed], dead_neuron_rate=[0.1, 0.25]) for s in specs}
    m = manifest(e, expected=[expected(methods=("lamp_ap",), rounds=(1,), value=None)])
    t = _table(m, specs, res)
    assert t.header == ["model", "base", "modified", "n",
                        "100% base", "100% modified", "100% Δ",
                        "100% base dead_neuron_rate", "100% modified dead_neuron_rate",
                        "80.0% base", "80.0% modified", "80.0% Δ",
                        "80.0% base dead_neuron_rate", "80.0% modified dead_neuron_rate"]
    assert t.rows == [
        ["vgg16", "lamp", "lamp_ap", "2", "90.0 ± 0.0", "90.0 ± 0.0", "+0.0", "0.100 ± 0.000", "0.100 ± 0.000",
         "80.5 ± 0.7", "82.5 ± 0.7 (paper —)", "+2.0", "0.250 ± 0.000", "0.250 ± 0.000"],
        ["vgg16", "global", "global_ap", "2", "90.0 ± 0.0", "90.0 ± 0.0", "+0.0", "0.100 ± 0.000", "0.100 ± 0.000",
         "78.5 ± 0.7", "78.0 ± 0.7", "-0.5", "0.250 ± 0.000", "0.250 ± 0.000"]]
    assert t.align == "lllr" + "c" * 10 and t.code == (0, 1, 2)


def test_paired_by_target_sparsity_with_missing_and_diverged_sides():
    e = experiment(methods=("snip", "snip_pags"), layout=Layout(kind="paired", pairs=(("snip", "snip_pags"),)),
                   sparsities=(0.9, 0.95))
    specs = specs_for(e, FINAL, targets=(0.9, 0.95))
    res = {s.id: final_run(0.85 if s.method == "snip" else 0.86, 1 - s.target_sparsity) for s in specs
           if not (s.method == "snip_pags" and s.target_sparsity == 0.95)}
    bad = next(s for s in specs if s.method == "snip" and s.target_sparsity == 0.95 and s.seed == 0)
    res[bad.id] = run(status="FAILED", diverged=True, step=5)
    t = _table(manifest(e), specs, res)
    assert t.header == ["model", "base", "modified", "n", "10.0% base", "10.0% modified", "10.0% Δ",
                        "5.00% base", "5.00% modified", "5.00% Δ"]
    assert t.rows == [["vgg16", "snip", "snip_pags", "0–2", "85.0 ± 0.0", "86.0 ± 0.0", "+1.0",
                       "diverged (1/2)", "—", "—"]]


def test_tables_follow_each_experiments_layout():
    a = experiment("a")
    b = experiment("b", methods=("snip",), layout=Layout(kind="by_sparsity"))
    m = manifest(a, b)
    specs = specs_for(a, rounds(1)) + specs_for(b, FINAL, targets=(0.9,))
    ts = report.tables(m, report.aggregate(m, specs, {}))
    assert [t.experiment.name for t in ts] == ["a", "b"]
    assert ts[0].header[:3] == ["model", "method", "n"] and ts[1].header[:2] == ["model", "target"]
    assert ts[0].rows[0] == ["vgg16", "global", "0", "—", "—"]


def test_paired_layout_lists_unpaired_methods_with_their_base_values_only():
    from harness.config.schema import Layout
    from harness import report
    from tests.report.fakes import FINAL, experiment, final_run, manifest, specs_for

    e = experiment(methods=("snip", "snip_pags", "synflow"), sparsities=(0.9,),
                   layout=Layout(kind="paired", pairs=(("snip", "snip_pags"),)))
    specs = specs_for(e, FINAL, targets=(0.9,))
    acc = {"snip": 0.80, "snip_pags": 0.83, "synflow": 0.81}
    results = {s.id: final_run(acc[s.method], 0.1) for s in specs}
    m = manifest(e)
    (t,) = report.tables(m, report.aggregate(m, specs, results))
    rows = {r[1]: r for r in t.rows}
    assert rows["snip"][2] == "snip_pags" and rows["snip"][6] == "+3.0"
    assert rows["synflow"][2] == "—" and rows["synflow"][4].startswith("81.0") and rows["synflow"][5] == "—"
