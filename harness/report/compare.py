"""The regression check: a fresh ``results.csv`` against a committed reference.

Rows are keyed by (experiment, dataset, model, method, target_sparsity, axis, index). Every
reference row must be present with the same ``n`` (and ``diverged`` and ``collapsed`` counts), ``remaining`` within
``density_tol`` (as a fraction; remaining is in %) and ``test_acc_mean`` within ``acc_tol`` points.
Numbers are compared as the decimals written in the files, so ``acc_tol=0`` means exactly equal.
"""

from __future__ import annotations

import csv
from decimal import Decimal, InvalidOperation
from pathlib import Path

from harness.report.render import KEY_COLUMNS

_REQUIRED = (*KEY_COLUMNS, "remaining", "n", "test_acc_mean")


def _key_text(key: tuple[str, ...]) -> str:
    exp, ds, model, method, target, axis, i = key
    return f"{exp}/{ds}/{model}/{method}{'/sp' + target if target else ''}/{axis} {i}"


def _read(path: Path) -> tuple[dict[tuple[str, ...], dict[str, str]], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        absent = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
        if absent:
            return {}, [f"{path}: missing column(s) {', '.join(absent)}"]
        rows: dict[tuple[str, ...], dict[str, str]] = {}
        problems = []
        for row in reader:
            key = tuple(row[c] for c in KEY_COLUMNS)
            if key in rows:
                problems.append(f"{path}: duplicate row {_key_text(key)}")
            rows[key] = row
        return rows, problems


def _dec(text: str | None) -> Decimal | None:
    try:
        return Decimal(text.strip()) if text and text.strip() else None
    except InvalidOperation:
        return None


def compare(reference_csv: Path, current_csv: Path, acc_tol: float = 5.0, density_tol: float = 1e-6) -> list[str]:
    """Problems (one line each) of ``current_csv`` against ``reference_csv``; empty means passed."""
    ref, problems = _read(Path(reference_csv))
    cur, more = _read(Path(current_csv))
    problems += more
    if problems:
        return problems
    tols = (("remaining", Decimal(repr(density_tol)) * 100), ("test_acc_mean", Decimal(repr(acc_tol))))
    for key, r in ref.items():
        where = _key_text(key)
        c = cur.get(key)
        if c is None:
            problems.append(f"{where}: missing from {current_csv}")
            continue
        for col in ("n", "diverged", "collapsed"):
            if col in r and col in c and r[col] != c[col]:
                problems.append(f"{where}: {col} = {c[col]}, reference {r[col]}")
        for col, tol in tols:
            a, b = _dec(r[col]), _dec(c[col])
            if a is None and b is None:
                continue
            if a is None or b is None:
                problems.append(f"{where}: {col} {c[col] or 'empty'}, reference {r[col] or 'empty'}")
            elif abs(a - b) > tol:
                problems.append(f"{where}: {col} {c[col]}, reference {r[col]} (|Δ| {abs(a - b)} > {tol})")
    for key in cur:
        if key not in ref:
            problems.append(f"{_key_text(key)}: not in reference {reference_csv}")
    return problems
