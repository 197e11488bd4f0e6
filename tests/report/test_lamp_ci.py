"""The report on the real LAMP manifest's ``ci`` grid (harness.config.load + expand), with
synthetic per-round metrics (no MLflow, Ray or training). The hand-made unit tests of each step
are in tests/test_report_*.py."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from harness import report
from harness.config import ExpectedCells
from harness.config.load import load
from harness.grid.expand import expand
from harness.report import cells as cells_mod
from tests.report.fakes import PNG_MAGIC, FakeTracker

pytestmark = pytest.mark.usefixtures("fake_procedure")

ROOT = Path(__file__).resolve().parents[2]
BASE = {"global": 0.80, "uniform": 0.74, "uniform_plus": 0.77, "erk": 0.78, "lamp": 0.83}


def _planned(spec):
    return [("round", r) for r in range(spec.params.rounds + 1)] + [("final", 0)]


@pytest.fixture(autouse=True)
def planned(monkeypatch):
    """Planned rows from the spec's own round count (independent of the procedure objects)."""
    monkeypatch.setattr(cells_mod, "planned_rows", _planned)


@pytest.fixture(scope="module")
def manifest():
    return load(ROOT / "paper_configs" / "lamp.yaml", profile="ci")


@pytest.fixture(scope="module")
def specs(manifest):
    return expand(manifest)


def _acc(spec, r: int) -> float:
    return BASE[spec.method] - 0.02 * r + 0.01 * math.sin(7.0 * spec.seed + 3.0 * r + 1.0)


def _rows(spec) -> dict:
    rounds = {r: {"test_acc": _acc(spec, r), "test_loss": 0.5 + 0.1 * r, "train_acc": 0.9 - 0.01 * r,
                  "density": 0.8 ** r, "density_all": 0.8 ** r + 0.001, "macs_fraction": 0.85 ** r}
              for r in range(spec.params.rounds + 1)}
    return {"round": rounds, "final": {0: dict(rounds[spec.params.rounds])}}


@pytest.fixture()
def results(specs):
    return {s.id: report.RunResult(rows=_rows(s)) for s in specs}


def test_lamp_ci_report(manifest, specs, results, tmp_path):
    assert len(specs) == 10  # 5 methods x 2 seeds, one model, one dataset
    summary = report.build(manifest, specs, results, tmp_path)
    assert summary.n_cells == 5 * 5 and summary.n_missing_runs == 0  # rounds 0..3 and the final row
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("# Layer-adaptive Sparsity for the Magnitude-based Pruning\n")
    for text in ("ICLR 2021", "2010.07611", "jaeho-lee/layer-adaptive-sparsity@f9fa4f3c", "`ci`", manifest.digest,
                 "| model | method | n | 100% | 80.0% | 64.0% | 51.2% |", "**ci_offline_data**:",
                 "![cifar10_main: test_acc against remaining weights](cifar10_main.png)"):
        assert text in readme, text
    a0, a1 = (_acc(next(s for s in specs if s.method == "erk" and s.seed == k), 2) * 100 for k in (0, 1))
    erk = next(line for line in readme.splitlines() if line.startswith("| `vgg16_w8` | `erk` | 2 |"))
    assert f"| {(a0 + a1) / 2:.1f} ± {abs(a0 - a1) / math.sqrt(2):.1f} |" in erk
    assert "(paper" not in readme  # the ci model has no expected entry
    assert (tmp_path / "cifar10_main.png").read_bytes()[:8] == PNG_MAGIC
    (claim,) = summary.claims
    assert claim.id == "lamp_beats_baselines_cifar10" and claim.outcome == report.NOT_ENOUGH_DATA
    assert claim.evidence == "no cell with remaining weights <= 3.6% (lowest recorded: 51.2%)"
    assert {c.id for c in report.dormant_claims(manifest)} == {
        "lamp_beats_baselines_svhn", "lamp_beats_baselines_cifar100", "lamp_beats_baselines_rewind",
        "global_beats_erk_rewind"}


def test_lamp_ci_claim_and_paper_values(manifest, specs, results, tmp_path):
    claim = dataclasses.replace(manifest.claims[0], max_density=0.7)
    m = dataclasses.replace(manifest, claims=(claim,), expected=(ExpectedCells(
        experiment="cifar10_main", models=("vgg16_w8",), methods=("lamp",), rounds=(1, 2, 3), value=None),))
    (res,) = report.evaluate_claims(m, report.aggregate(m, specs, results))
    assert res.outcome == report.HELD
    assert res.evidence == ("lamp >= global, uniform, uniform_plus, erk on test_acc at all 2 compared cells (8 comparisons) "
                            "[compared lamp with global, uniform, uniform_plus, erk: vgg16_w8 at 64.0%, 51.2%; "
                            "window: remaining weights <= 70%]")
    report.build(m, specs, results, tmp_path)
    lamp_row = next(line for line in (tmp_path / "README.md").read_text().splitlines()
                    if line.startswith("| `vgg16_w8` | `lamp` |"))
    assert lamp_row.count("(paper —)") == 3


def test_collect_then_build_and_compare(manifest, specs, tmp_path):
    tracker = FakeTracker({s.id: (_rows(s), "FINISHED", {}) for s in specs[:8]})
    results = report.collect(specs, tracker)
    assert set(results) == {s.id for s in specs[:8]}
    summary = report.build(manifest, specs, results, tmp_path / "a")
    assert summary.n_missing_runs == 2
    assert "**Incomplete report**: 2 of 10 runs have no results" in (tmp_path / "a" / "README.md").read_text()
    report.build(manifest, specs, results, tmp_path / "b")
    assert report.compare(tmp_path / "a" / "results.csv", tmp_path / "b" / "results.csv", acc_tol=0) == []
