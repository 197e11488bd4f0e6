"""The report: aggregation over seeds, paper values, claims, file outputs and the regression check.

Synthetic per-round metrics for the LAMP manifest's ``ci`` grid (no MLflow, Ray or training).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import report
from harness.manifest import Claim, ExpectedCells, Manifest, RunSpec, expand, load

ROOT = Path(__file__).resolve().parent.parent
BASE = {"global": 0.80, "uniform": 0.74, "uniform_plus": 0.77, "erk": 0.78, "lamp": 0.83}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _noise(seed: int, rnd: int) -> float:
    """Deterministic per-seed noise in [-0.01, 0.01]."""
    return 0.01 * math.sin(7.0 * seed + 3.0 * rnd + 1.0)


def _acc(spec: RunSpec, rnd: int) -> float:
    return BASE[spec.method] - 0.02 * rnd + _noise(spec.seed, rnd)


def _rows(spec: RunSpec) -> dict[int, dict[str, float]]:
    return {r: {"test_acc": _acc(spec, r), "test_loss": 0.5 + 0.1 * r, "train_acc": 0.9 - 0.01 * r,
                "train_loss": 0.3, "density": 0.8 ** r, "density_all": 0.8 ** r + 0.001,
                "macs_fraction": 0.85 ** r}
            for r in range(spec.pruning.rounds + 1)}


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return load(ROOT / "paper_configs" / "lamp.yaml", profile="ci")


@pytest.fixture(scope="module")
def specs(manifest: Manifest) -> list[RunSpec]:
    return expand(manifest)


@pytest.fixture()
def results(specs: list[RunSpec]) -> dict[str, dict[int, dict[str, float]]]:
    return {s.id: _rows(s) for s in specs}


def _cell(cs: list[report.Cell], method: str, rnd: int) -> report.Cell:
    (c,) = [c for c in cs if c.method == method and c.round == rnd]
    return c


def _spec(specs: list[RunSpec], method: str, seed: int) -> RunSpec:
    (s,) = [s for s in specs if s.method == method and s.seed == seed]
    return s


def _claim(**kw) -> Claim:
    base = dict(id="lamp_wins", text="LAMP beats the baselines", experiment="cifar10_main", a="lamp",
                b=("global", "uniform", "uniform_plus", "erk"), max_density=0.7)
    return Claim(**{**base, **kw})


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- aggregation


def test_cell_mean_std_n_by_hand(manifest, specs, results):
    assert len(specs) == 10  # 5 methods x 2 seeds, one model, one dataset
    cs = report.cells(manifest, specs, results)
    assert len(cs) == 5 * 4  # rounds 0..3
    c = _cell(cs, "erk", 2)
    a0, a1 = _acc(_spec(specs, "erk", 0), 2), _acc(_spec(specs, "erk", 1), 2)
    assert c.n == 2
    assert c.test_acc_mean == pytest.approx((a0 + a1) / 2)
    assert c.test_acc_std == pytest.approx(abs(a0 - a1) / math.sqrt(2))  # sample std of two values
    assert c.test_acc_std == pytest.approx(statistics.stdev([a0, a1]))
    assert c.density_mean == pytest.approx(0.64)
    assert c.remaining == pytest.approx(64.0)
    assert c.train_acc_mean == pytest.approx(0.88)
    assert c.test_loss_mean == pytest.approx(0.7)
    assert c.macs_fraction_mean == pytest.approx(0.85 ** 2)
    assert not c.expected and c.paper_value is None and c.diff is None  # ci cells: no expectation


def test_single_seed_has_no_std(manifest, specs, results):
    del results[_spec(specs, "lamp", 1).id]
    c = _cell(report.cells(manifest, specs, results), "lamp", 1)
    assert c.n == 1 and c.test_acc_std is None
    assert c.test_acc_mean == pytest.approx(_acc(_spec(specs, "lamp", 0), 1))


def test_collect_uses_find_and_rows_and_skips_missing(specs):
    have = {s.id: _rows(s) for s in specs[:3]}

    class FakeTracker:
        def find(self, paper, run_id):
            assert paper == "lamp"
            return SimpleNamespace(info=SimpleNamespace(run_id="mlflow-" + run_id)) if run_id in have else None

        def rows(self, mlflow_run_id):
            return have[mlflow_run_id.removeprefix("mlflow-")]

    assert report.collect(specs, FakeTracker()) == have


# --------------------------------------------------------------------------- paper values


def test_null_expected_value_renders_as_paper_dash(manifest, specs, results, tmp_path):
    m = dataclasses.replace(manifest, expected=(ExpectedCells(
        experiment="cifar10_main", models=("vgg16_w8",), methods=("lamp",), rounds=(1, 2, 3), value=None),))
    report.build(m, specs, results, tmp_path)
    readme = (tmp_path / "README.md").read_text()
    lamp_row = next(line for line in readme.splitlines() if line.startswith("| `vgg16_w8` | `lamp` |"))
    assert lamp_row.count("(paper —)") == 3
    assert "(paper " + "0" not in lamp_row and "Δ" not in lamp_row
    global_row = next(line for line in readme.splitlines() if line.startswith("| `vgg16_w8` | `global` |"))
    assert "paper" not in global_row  # not covered by the expectation
    rows = [r for r in _csv_rows(tmp_path / "results.csv") if r["method"] == "lamp"]
    assert all(r["paper_value"] == "" and r["diff"] == "" for r in rows)
    assert "(paper ---)" in (tmp_path / "tables.tex").read_text()


def test_expected_value_shows_paper_and_difference(manifest, specs, results, tmp_path):
    m = dataclasses.replace(manifest, expected=(ExpectedCells(
        experiment="cifar10_main", models=("vgg16_w8",), methods=("lamp",), rounds=(2,), value=90.0,
        tolerance=1.0, datasets=("fashion_mnist_ci",), source="Table 1"),))
    cs = report.cells(m, specs, results)
    c = _cell(cs, "lamp", 2)
    mean_pct = (_acc(_spec(specs, "lamp", 0), 2) + _acc(_spec(specs, "lamp", 1), 2)) / 2 * 100
    assert c.expected and c.paper_value == 90.0 and c.paper_tolerance == 1.0 and c.paper_source == "Table 1"
    assert c.diff == pytest.approx(mean_pct - 90.0)
    assert not _cell(cs, "lamp", 1).expected

    report.build(m, specs, results, tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert f"(paper 90.0, Δ {mean_pct - 90.0:+.1f} ✗)" in readme  # about -11.6: outside ±1.0
    assert readme.count("(paper 90.0") == 1
    (row,) = [r for r in _csv_rows(tmp_path / "results.csv") if r["method"] == "lamp" and r["round"] == "2"]
    assert row["paper_value"] == "90.0000" and row["paper_tolerance"] == "1.0000"
    assert float(row["diff"]) == pytest.approx(mean_pct - 90.0, abs=1e-4)
    assert float(row["test_acc_mean"]) == pytest.approx(mean_pct, abs=1e-4)
    assert r"$\Delta$" in (tmp_path / "tables.tex").read_text()


def test_expected_entry_for_another_dataset_does_not_apply(manifest, specs, results):
    m = dataclasses.replace(manifest, expected=(ExpectedCells(
        experiment="cifar10_main", models=("vgg16_w8",), methods=("lamp",), rounds=(2,), value=90.0,
        datasets=("cifar10",)),))
    assert not any(c.expected for c in report.cells(m, specs, results))


# --------------------------------------------------------------------------- claims


def test_ci_claim_has_not_enough_data_and_dormant_claims_are_skipped(manifest, specs, results):
    claims = report.evaluate_claims(manifest, report.cells(manifest, specs, results))
    assert [c.id for c in claims] == ["lamp_beats_baselines_cifar10"]  # the others' experiments are not in ci
    assert claims[0].outcome == report.NOT_ENOUGH_DATA
    assert "3.6%" in claims[0].evidence and "51.2%" in claims[0].evidence
    assert {c.id for c in report.dormant_claims(manifest)} == {
        "lamp_beats_baselines_svhn", "lamp_beats_baselines_cifar100", "lamp_beats_baselines_rewind",
        "global_beats_erk_rewind"}


def test_claim_held(manifest, specs, results):
    m = dataclasses.replace(manifest, claims=(_claim(),))
    (res,) = report.evaluate_claims(m, report.cells(m, specs, results))
    assert res.outcome == report.HELD
    # densities 0.64 and 0.512 are <= 0.7: two rounds, four baselines each
    assert res.evidence.startswith("lamp >= global, uniform, uniform_plus, erk at all 2 compared cells")
    assert "8 comparisons" in res.evidence


def test_claim_failed_names_the_cell(manifest, specs, results):
    for seed in (0, 1):  # lamp falls 2.5 points below global at round 3, stays within 1 of the rest
        rid = _spec(specs, "lamp", seed).id
        results[rid][3]["test_acc"] = _acc(_spec(specs, "global", seed), 3) - 0.025
    m = dataclasses.replace(manifest, claims=(_claim(margin=1.0),))
    (res,) = report.evaluate_claims(m, report.cells(m, specs, results))
    assert res.outcome == report.FAILED
    glob = _cell(report.cells(m, specs, results), "global", 3).test_acc_mean * 100
    assert "vgg16_w8" in res.evidence and "round 3" in res.evidence and "51.2% remaining" in res.evidence
    assert f"lamp {glob - 2.5:.1f} < global {glob:.1f}" in res.evidence
    assert "1 of 8 comparisons" in res.evidence and "erk" not in res.evidence.split(":", 1)[1]
    # a margin larger than the gap lets it hold
    m = dataclasses.replace(manifest, claims=(_claim(margin=3.0),))
    (res,) = report.evaluate_claims(m, report.cells(m, specs, results))
    assert res.outcome == report.HELD


def test_claim_not_enough_data(manifest, specs, results):
    m = dataclasses.replace(manifest, claims=(_claim(max_density=0.1),))
    (res,) = report.evaluate_claims(m, report.cells(m, specs, results))
    assert res.outcome == report.NOT_ENOUGH_DATA
    assert "no cell with remaining weights <= 10%" in res.evidence
    # baselines without data at the compared densities
    for s in specs:
        if s.method != "lamp":
            del results[s.id]
    m = dataclasses.replace(manifest, claims=(_claim(),))
    (res,) = report.evaluate_claims(m, report.cells(m, specs, results))
    assert res.outcome == report.NOT_ENOUGH_DATA and "no data for global" in res.evidence
    (res,) = report.evaluate_claims(m, report.cells(m, specs, {}))
    assert res.outcome == report.NOT_ENOUGH_DATA and res.evidence == "no data for lamp"


# --------------------------------------------------------------------------- files


def test_build_writes_all_files(manifest, specs, results, tmp_path):
    summary = report.build(manifest, specs, results, tmp_path / "out")
    out = tmp_path / "out"
    assert summary.out_dir == out and summary.n_cells == 20 and summary.n_missing_runs == 0
    assert [c.id for c in summary.claims] == ["lamp_beats_baselines_cifar10"]
    for name in ("README.md", "results.csv", "tables.tex", "cifar10_main.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert "Incomplete report" not in (out / "README.md").read_text()
    assert (out / "cifar10_main.png").read_bytes()[:8] == PNG_MAGIC

    readme = (out / "README.md").read_text()
    assert readme.startswith("# Layer-adaptive Sparsity for the Magnitude-based Pruning\n")
    for text in ("ICLR 2021", "2010.07611", "jaeho-lee/layer-adaptive-sparsity@f9fa4f3c", "`ci`",
                 manifest.digest, "## How to read this", "![cifar10_main", "(cifar10_main.png)",
                 "| model | method | n | 100% | 80.0% | 64.0% | 51.2% |", "**not enough data**",
                 "**ci_offline_data**:", "**mask_mechanism**:"):
        assert text in readme, text
    assert "Missing runs" not in readme
    assert str(ROOT) not in readme  # no absolute paths in a committed report
    c = _cell(report.cells(manifest, specs, results), "erk", 2)
    assert f"| {c.test_acc_mean * 100:.1f} ± {c.test_acc_std * 100:.1f} |" in readme

    rows = _csv_rows(out / "results.csv")
    assert list(rows[0]) == list(report.CSV_COLUMNS) and len(rows) == 20
    (row,) = [r for r in rows if r["method"] == "erk" and r["round"] == "2"]
    assert row["n"] == "2" and row["remaining"] == "64.000000" and row["target_sparsity"] == ""
    assert row["test_acc_mean"] == f"{c.test_acc_mean * 100:.4f}"
    assert row["test_acc_std"] == f"{c.test_acc_std * 100:.4f}"

    tex = (out / "tables.tex").read_text()
    for text in (r"\toprule", r"\midrule", r"\bottomrule", r"uniform\_plus", r"vgg16\_w8", r"80.0\%", r"$\pm$"):
        assert text in tex, text
    assert tex.count(r"\begin{tabular}") == 1
    assert "±" not in tex and "—" not in tex


def test_build_is_deterministic(manifest, specs, results, tmp_path):
    report.build(manifest, specs, results, tmp_path / "a")
    report.build(manifest, specs, dict(reversed(list(results.items()))), tmp_path / "b")
    for name in ("README.md", "results.csv", "tables.tex"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_missing_run_counts_and_shows_dash(manifest, specs, results, tmp_path):
    gone = [_spec(specs, "uniform", 0), _spec(specs, "uniform", 1)]
    for s in gone:
        del results[s.id]
    summary = report.build(manifest, specs, results, tmp_path)
    assert summary.n_missing_runs == 2
    readme = (tmp_path / "README.md").read_text()
    assert "| `vgg16_w8` | `uniform` | 0 | — | — | — | — |" in readme
    assert "2 of 10 runs have no data yet" in readme
    assert "**Incomplete report**: 2 of 10 runs have no results" in readme  # never presented as complete
    assert all(s.id in readme for s in gone)
    rows = [r for r in _csv_rows(tmp_path / "results.csv") if r["method"] == "uniform"]
    assert len(rows) == 4 and all(r["n"] == "0" and r["test_acc_mean"] == "" for r in rows)
    # one seed of a method missing: n = 1 and no ± for that row
    del results[_spec(specs, "lamp", 1).id]
    report.build(manifest, specs, results, tmp_path)
    lamp_row = next(line for line in (tmp_path / "README.md").read_text().splitlines()
                    if line.startswith("| `vgg16_w8` | `lamp` |"))
    assert lamp_row.startswith("| `vgg16_w8` | `lamp` | 1 |") and "±" not in lamp_row


def test_tex_escape():
    assert report.tex_escape("51.2% of uniform_plus ± 1 — a&b") == r"51.2\% of uniform\_plus $\pm$ 1 --- a\&b"


# --------------------------------------------------------------------------- regression check


def test_compare(manifest, specs, results, tmp_path):
    report.build(manifest, specs, results, tmp_path / "ref")
    ref = tmp_path / "ref" / "results.csv"
    assert report.compare(ref, ref) == []

    # a shift within the tolerance passes; one beyond it is reported with its cell
    small = {k: {r: dict(v) for r, v in rows.items()} for k, rows in results.items()}
    small[_spec(specs, "erk", 0).id][2]["test_acc"] += 0.04  # mean moves 2 points
    report.build(manifest, specs, small, tmp_path / "small")
    assert report.compare(ref, tmp_path / "small" / "results.csv", acc_tol=5.0) == []

    big = {k: {r: dict(v) for r, v in rows.items()} for k, rows in results.items()}
    big[_spec(specs, "erk", 0).id][2]["test_acc"] += 0.2  # mean moves 10 points
    report.build(manifest, specs, big, tmp_path / "big")
    problems = report.compare(ref, tmp_path / "big" / "results.csv", acc_tol=5.0)
    assert len(problems) == 1
    assert "cifar10_main/fashion_mnist_ci/vgg16_w8/erk/round 2" in problems[0] and "test_acc_mean" in problems[0]

    # a density change beyond density_tol
    dens = {k: {r: dict(v) for r, v in rows.items()} for k, rows in results.items()}
    dens[_spec(specs, "global", 1).id][1]["density"] += 1e-4
    report.build(manifest, specs, dens, tmp_path / "dens")
    (problem,) = report.compare(ref, tmp_path / "dens" / "results.csv")
    assert "global/round 1" in problem and "remaining" in problem

    # a missing seed changes n; a dropped row is missing on one side or the other
    fewer = dict(results)
    del fewer[_spec(specs, "lamp", 1).id]
    report.build(manifest, specs, fewer, tmp_path / "fewer")
    problems = report.compare(ref, tmp_path / "fewer" / "results.csv")
    assert len(problems) == 4 and all("n = 1, reference 2" in p for p in problems)

    lines = ref.read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.csv"
    cut.write_text("".join(lines[:5] + lines[6:]))
    dropped = ",".join(lines[5].split(",")[:6])
    (problem,) = report.compare(ref, cut)
    assert "missing from" in problem and "round " + dropped.split(",")[5] in problem
    (problem,) = report.compare(cut, ref)
    assert "not in reference" in problem
