"""build(): README.md, results.csv, tables.tex and the plots, on a hand-made three-experiment
manifest (by_round, by_sparsity sweep, paired)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from harness import report
from harness.config.schema import Layout
from tests.report.fakes import (FINAL, PNG_MAGIC, FakeSpec, claim, experiment, expected, final_run, manifest,
                                     round_run, rounds, run, specs_for)

pytestmark = pytest.mark.usefixtures("fake_procedure")


def _grid():
    lamp = experiment("lamp_main", title="LAMP: accuracy | remaining weights")
    dpf = experiment("dpf_sweep", methods=("dense", "dpf"), models=("wrn28_2",), sparsities=(0.5, 0.9),
                     layout=Layout(kind="by_sparsity", dense_method="dense", columns=("best_test_acc",)))
    ap = experiment("ap", methods=("global", "global_ap"), layout=Layout(kind="paired", pairs=(("global", "global_ap"),)))
    m = manifest(lamp, dpf, ap,
                 expected=[expected(experiment="lamp_main", rounds=(2,), value=90.0, tolerance=1.0, source="Table 1"),
                           expected(experiment="dpf_sweep", models=("wrn28_2",), methods=("dpf",), sparsities=(0.9,),
                                    value=91.0, kind="reference")],
                 claims=[claim(experiment="lamp_main", max_density=0.7),
                         claim(id="dormant_one", experiment="elsewhere")])
    specs = (specs_for(lamp, rounds(3))
             + [FakeSpec("dpf_sweep", "dense", "wrn28_2", s, planned=FINAL) for s in (0, 1)]
             + [FakeSpec("dpf_sweep", "dpf", "wrn28_2", s, target_sparsity=t, planned=FINAL) for t in (0.5, 0.9) for s in (0, 1)]
             + specs_for(ap, rounds(2)))
    res = {}
    for s in specs:
        k = 0.005 * s.seed
        if s.experiment == "lamp_main":
            res[s.id] = round_run([0.9 + k, 0.88 + k, 0.86 + k, (0.84 if s.method == "lamp" else 0.83) + k])
        elif s.method == "dense":
            res[s.id] = final_run(0.94 + k, 1.0, best_test_acc=0.95 + k)
        elif s.experiment == "dpf_sweep":
            res[s.id] = final_run(0.95 - s.target_sparsity / 10 + k, 1 - s.target_sparsity, 1 - s.target_sparsity + 0.004,
                                  best_test_acc=0.96 - s.target_sparsity / 10 + k, reactivated=100.0 + s.seed)
        else:
            res[s.id] = round_run([0.9 + k, 0.85 + k, 0.80 + k + (0.02 if s.method == "global_ap" else 0)])
    return m, specs, res


@pytest.fixture()
def grid():
    return _grid()


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_build_writes_every_file(grid, tmp_path):
    m, specs, res = grid
    out = tmp_path / "out"
    summary = report.build(m, specs, res, out)
    assert summary.out_dir == out and summary.n_missing_runs == 0
    assert summary.n_cells == 2 * 5 + 3 + 2 * 4  # lamp rounds 0..3 + final; dpf finals; ap rounds 0..2 + final
    assert [c.id for c in summary.claims] == ["lamp_wins"] and summary.claims[0].outcome == report.HELD
    names = ["README.md", "results.csv", "tables.tex", "lamp_main.png", "dpf_sweep.png", "ap.png"]
    assert summary.files == [out / n for n in names]
    for n in names:
        assert (out / n).is_file() and (out / n).stat().st_size > 0, n
    for n in names[3:]:
        assert (out / n).read_bytes()[:8] == PNG_MAGIC


def test_readme(grid, tmp_path):
    m, specs, res = grid
    report.build(m, specs, res, tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("# A Toy Paper\n")
    for text in ("ICLR 2021", "arXiv [2010.07611]", "[someone/toy@abc123](https://github.com/someone/toy/tree/abc123)",
                 "Profile `ci` of `toy.yaml` (manifest digest `0123456789abcdef`).",
                 "## How to read this", "*By round* tables", "*By sparsity* tables", "*Paired* tables",
                 "a ≥ b − margin", "gap ≤ k·se, se = sqrt(sd_a²/n_a + sd_b²/n_b)", "fewer than 2 seeds",
                 "## LAMP: accuracy | remaining weights",
                 "Ran: cifar10 · vgg16_bn · dense 20it, then 5it per round at batch 100 · seeds 0, 1 (experiment "
                 "`lamp_main`, datasets `cifar10`).",
                 "| model | method | n | 100% | 80.0% | 64.0% | 51.2% |",
                 "|:---|:---|---:|---:|---:|---:|---:|",
                 "| `vgg16` | `lamp` | 2 | 90.3 ± 0.4 | 88.2 ± 0.4 | 86.2 ± 0.4 (paper 90.0, Δ -3.8 ✗) | 84.2 ± 0.4 |",
                 "![lamp_main: test_acc against remaining weights](lamp_main.png)",
                 "![dpf_sweep: test_acc against sparsity](dpf_sweep.png)",
                 "Cell value: `test_acc` (%); extra columns: `best_test_acc` (%).",
                 "| `wrn28_2` | 90% | 90.00% | 89.60% | 2 | 94.2 ± 0.4 | 95.2 ± 0.4 | 86.2 ± 0.4 (reference 91.0, Δ -4.8) | 87.2 ± 0.4 |",
                 "| `vgg16` | `global` | `global_ap` | 2 |",
                 "## Claims", "| `lamp_wins` | LAMP beats global | cifar10 · vgg16_bn · dense 20it, then 5it per round at batch 100 · seeds 0, 1 | **held** |",
                 "Not evaluated (their experiments are not part of profile `ci`): `dormant_one`.",
                 "## Deviations from the paper and its code", "- **toy**: a toy reason"):
        assert text in readme, text
    assert "LAMP: accuracy \\| remaining" not in readme  # headings are not table cells
    for text in ("Incomplete report", "## Missing runs", "## Diverged runs", "## Collapsed runs", "/somewhere",
                 "Diverged runs*", "Collapsed runs*"):
        assert text not in readme, text


def test_diverged_runs_are_listed_and_counted(grid, tmp_path):
    m, specs, res = grid
    bad = next(s for s in specs if s.experiment == "lamp_main" and s.method == "lamp" and s.seed == 1)
    rows = res[bad.id].rows["round"]
    res[bad.id] = run({"round": {0: rows[0], 1: rows[1]}}, status="FAILED", diverged=True, step=4321)
    summary = report.build(m, specs, res, tmp_path)
    assert summary.n_missing_runs == 0  # diverged is a result, not a missing run
    readme = (tmp_path / "README.md").read_text()
    assert "## Diverged runs" in readme and "1 of 14 runs diverged" in readme
    assert f"- `lamp_main/vgg16/cifar10/lamp/s1` (`{bad.id}`): diverged at step 4321" in readme
    assert "| `vgg16` | `lamp` | 1–2 | 90.3 ± 0.4 | 88.2 ± 0.4 | diverged (1/2) | diverged (1/2) |" in readme
    assert "Incomplete report" not in readme
    by_key = {(r["experiment"], r["method"], r["axis"], r["index"]): r for r in _csv(tmp_path / "results.csv")}
    r2 = by_key["lamp_main", "lamp", "round", "2"]
    assert (r2["n"], r2["diverged"], r2["test_acc_mean"], r2["test_acc_std"]) == ("1", "1", "86.0000", "")
    assert by_key["lamp_main", "lamp", "round", "1"]["diverged"] == "0"
    assert by_key["lamp_main", "lamp", "final", "0"]["diverged"] == "1"


def test_missing_and_unfinished_runs_make_an_incomplete_report(grid, tmp_path):
    m, specs, res = grid
    gone = [s for s in specs if s.experiment == "lamp_main" and s.method == "global"]
    for s in gone:
        del res[s.id]
    busy = next(s for s in specs if s.experiment == "ap" and s.method == "global_ap" and s.seed == 0)
    res[busy.id] = run({"round": {0: res[busy.id].rows["round"][0]}}, status="RUNNING")
    summary = report.build(m, specs, res, tmp_path)
    assert summary.n_missing_runs == 3
    readme = (tmp_path / "README.md").read_text()
    assert "> **Incomplete report**: 3 of 14 runs have no results and 8 of 21 cells have fewer seeds than planned." in readme
    assert "| `vgg16` | `global` | 0 | — | — | — | — |" in readme
    assert "3 of 14 runs have no results yet:" in readme
    assert f"- `ap/vgg16/cifar10/global_ap/s0` (`{busy.id}`): unfinished (status RUNNING)" in readme
    assert all(f"(`{s.id}`)\n" in readme for s in gone)
    rows = [r for r in _csv(tmp_path / "results.csv") if r["experiment"] == "lamp_main" and r["method"] == "global"]
    assert len(rows) == 5 and all(r["n"] == "0" and r["test_acc_mean"] == "" and r["remaining"] == "" for r in rows)


def test_results_csv(grid, tmp_path):
    m, specs, res = grid
    report.build(m, specs, res, tmp_path)
    rows = _csv(tmp_path / "results.csv")
    assert list(rows[0]) == ["experiment", "dataset", "model", "method", "target_sparsity", "axis", "index",
                             "remaining", "n", "diverged", "collapsed", "test_acc_mean", "test_acc_std",
                             "best_test_acc_mean", "best_test_acc_std", "density_mean", "density_std",
                             "density_all_mean", "density_all_std", "reactivated_mean", "reactivated_std",
                             "paper_value", "paper_tolerance", "paper_diff",
                             "reference_value", "reference_tolerance", "reference_diff"]
    key = {(r["experiment"], r["method"], r["target_sparsity"], r["axis"], r["index"]): r for r in rows}
    r = key["lamp_main", "lamp", "", "round", "2"]
    assert (r["remaining"], r["n"], r["diverged"], r["test_acc_mean"], r["test_acc_std"]) == (
        "64.000000", "2", "0", "86.2500", "0.3536")
    assert (r["paper_value"], r["paper_tolerance"], r["paper_diff"], r["reference_value"]) == (
        "90.0000", "1.0000", "-3.7500", "")
    r = key["dpf_sweep", "dpf", "0.9", "final", "0"]
    assert (r["reactivated_mean"], r["reactivated_std"], r["density_all_mean"]) == ("100.5", "0.707107", "0.104")
    assert (r["reference_value"], r["reference_diff"], r["paper_value"]) == ("91.0000", "-4.7500", "")
    assert key["dpf_sweep", "dense", "", "final", "0"]["reactivated_mean"] == ""
    assert [(r["axis"], r["index"]) for r in rows if r["experiment"] == "ap" and r["method"] == "global"] == [
        ("round", "0"), ("round", "1"), ("round", "2"), ("final", "0")]


def test_tables_tex(grid, tmp_path):
    m, specs, res = grid
    report.build(m, specs, res, tmp_path)
    tex = (tmp_path / "tables.tex").read_text()
    assert tex.count(r"\begin{tabular}") == 3 and tex.count(r"\toprule") == 3 and tex.count(r"\bottomrule") == 3
    for text in (r"\begin{tabular}{llrcccc}", r"\begin{tabular}{lrrrrcccc}", r"global\_ap", r"wrn28\_2",
                 r"80.0\%", r"$\pm$", r"$\Delta$", r"$\times$", r"\label{tab:lamp_main}", r"LAMP: accuracy | remaining"):
        assert text in tex, text
    assert not any(ch in tex for ch in "±—Δ✗–")


def test_tex_escape():
    assert report.tex_escape("51.2% of uniform_plus ± 1 — a&b") == r"51.2\% of uniform\_plus $\pm$ 1 --- a\&b"


def test_build_is_deterministic(grid, tmp_path):
    m, specs, res = grid
    report.build(m, specs, res, tmp_path / "a")
    report.build(m, list(reversed(specs)), dict(reversed(list(res.items()))), tmp_path / "b")
    for name in ("README.md", "results.csv", "tables.tex", "lamp_main.png", "dpf_sweep.png", "ap.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_plots_for_a_single_sparsity_and_for_no_data(tmp_path):
    e = experiment("dpf_table", methods=("dense", "snip", "dpf"), models=("resnet20", "vgg19"),
                   layout=Layout(kind="by_sparsity", dense_method="dense"), sparsities=(0.9,))
    specs = [FakeSpec("dpf_table", meth, model, 0, target_sparsity=None if meth == "dense" else 0.9, planned=FINAL)
             for model in e.models for meth in e.methods]
    res = {s.id: final_run(0.9, 1.0 if s.method == "dense" else 0.1) for s in specs if s.model_key == "resnet20"}
    summary = report.build(manifest(e), specs, res, tmp_path)
    assert (tmp_path / "dpf_table.png").read_bytes()[:8] == PNG_MAGIC and summary.n_missing_runs == 3
