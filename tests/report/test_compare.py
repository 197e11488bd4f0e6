"""compare(): the regression check of results.csv against a committed reference, on hand-written files."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import report

pytestmark = pytest.mark.usefixtures("fake_procedure")

HEAD = "experiment,dataset,model,method,target_sparsity,axis,index,remaining,n,diverged,test_acc_mean,test_acc_std\n"
ROWS = ["main,cifar10,vgg16,lamp,,round,0,100.000000,2,0,90.1000,0.5000\n",
        "main,cifar10,vgg16,lamp,,round,1,80.000000,2,0,88.2500,0.5000\n",
        "main,cifar10,vgg16,lamp,,final,0,80.000000,2,0,88.2500,0.5000\n",
        "dpf,cifar10,wrn28_2,dpf,0.9,final,0,10.000000,2,0,75.1000,\n"]


def _write(path: Path, rows: list[str], head: str = HEAD) -> Path:
    path.write_text(head + "".join(rows))
    return path


def _with(i: int, col: str, value: str) -> list[str]:
    rows = list(ROWS)
    cols = HEAD.strip().split(",")
    cells = rows[i].rstrip("\n").split(",")
    cells[cols.index(col)] = value
    rows[i] = ",".join(cells) + "\n"
    return rows


def test_identical_files_pass_even_at_zero_tolerance(tmp_path):
    ref = _write(tmp_path / "ref.csv", ROWS)
    assert report.compare(ref, ref) == []
    assert report.compare(ref, _write(tmp_path / "cur.csv", ROWS), acc_tol=0.0, density_tol=0.0) == []


def test_accuracy_tolerance_is_inclusive_and_exact_as_written(tmp_path):
    ref = _write(tmp_path / "ref.csv", ROWS)
    at_tol = _write(tmp_path / "a.csv", _with(3, "test_acc_mean", "80.1000"))  # exactly 5.0 points
    assert report.compare(ref, at_tol, acc_tol=5.0) == []
    beyond = _write(tmp_path / "b.csv", _with(3, "test_acc_mean", "80.1001"))
    (problem,) = report.compare(ref, beyond, acc_tol=5.0)
    assert problem == "dpf/cifar10/wrn28_2/dpf/sp0.9/final 0: test_acc_mean 80.1001, reference 75.1000 (|Δ| 5.0001 > 5.0)"
    last_digit = _write(tmp_path / "c.csv", _with(1, "test_acc_mean", "88.2501"))
    assert report.compare(ref, last_digit, acc_tol=0.001) == []
    (problem,) = report.compare(ref, last_digit, acc_tol=0)
    assert "main/cifar10/vgg16/lamp/round 1: test_acc_mean 88.2501, reference 88.2500" in problem
    same_number = _write(tmp_path / "d.csv", _with(1, "test_acc_mean", "88.25"))  # same value, other spelling
    assert report.compare(ref, same_number, acc_tol=0) == []


def test_density_n_and_diverged_must_match(tmp_path):
    ref = _write(tmp_path / "ref.csv", ROWS)
    assert report.compare(ref, _write(tmp_path / "a.csv", _with(1, "remaining", "80.000100"))) == []  # 1e-6 * 100
    (problem,) = report.compare(ref, _write(tmp_path / "b.csv", _with(1, "remaining", "80.000101")))
    assert problem.startswith("main/cifar10/vgg16/lamp/round 1: remaining 80.000101, reference 80.000000")
    (problem,) = report.compare(ref, _write(tmp_path / "c.csv", _with(0, "n", "1")))
    assert problem == "main/cifar10/vgg16/lamp/round 0: n = 1, reference 2"
    (problem,) = report.compare(ref, _write(tmp_path / "d.csv", _with(2, "diverged", "1")))
    assert problem == "main/cifar10/vgg16/lamp/final 0: diverged = 1, reference 0"
    (problem,) = report.compare(ref, _write(tmp_path / "e.csv", _with(3, "test_acc_mean", "")))
    assert problem == "dpf/cifar10/wrn28_2/dpf/sp0.9/final 0: test_acc_mean empty, reference 75.1000"


def test_missing_extra_and_malformed_rows(tmp_path):
    ref = _write(tmp_path / "ref.csv", ROWS)
    cut = _write(tmp_path / "cut.csv", ROWS[:1] + ROWS[2:])
    (problem,) = report.compare(ref, cut)
    assert problem == f"main/cifar10/vgg16/lamp/round 1: missing from {cut}"
    (problem,) = report.compare(cut, ref)
    assert problem == f"main/cifar10/vgg16/lamp/round 1: not in reference {cut}"
    dup = _write(tmp_path / "dup.csv", ROWS + ROWS[:1])
    assert report.compare(ref, dup) == [f"{dup}: duplicate row main/cifar10/vgg16/lamp/round 0"]
    old = _write(tmp_path / "old.csv", ["main,cifar10,vgg16,lamp,,0,100.0,2,90.1\n"],
                 head="experiment,dataset,model,method,target_sparsity,round,remaining,n,test_acc_mean\n")
    assert report.compare(old, ref) == [f"{old}: missing column(s) axis, index"]


def test_a_built_report_compares_clean_against_itself_and_flags_a_change(tmp_path):
    from tests.report.test_build import _grid

    m, specs, res = _grid()
    report.build(m, specs, res, tmp_path / "ref")
    report.build(m, specs, res, tmp_path / "again")
    assert report.compare(tmp_path / "ref" / "results.csv", tmp_path / "again" / "results.csv", acc_tol=0) == []
    s = next(s for s in specs if s.experiment == "ap" and s.method == "global" and s.seed == 0)
    rows = {axis: {i: dict(v) for i, v in by.items()} for axis, by in res[s.id].rows.items()}
    rows["round"][2]["test_acc"] += 0.2  # the mean moves 10 points
    res[s.id] = report.RunResult(rows=rows)
    report.build(m, specs, res, tmp_path / "moved")
    (problem,) = report.compare(tmp_path / "ref" / "results.csv", tmp_path / "moved" / "results.csv")
    assert problem.startswith("ap/cifar10/vgg16/global/round 2: test_acc_mean 90.2500, reference 80.2500")
