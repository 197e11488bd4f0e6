"""Cells -> one :class:`Table` per experiment, laid out as the manifest says (``experiment.layout``).

* ``by_round`` (LAMP): rows (model, method); columns the pruning rounds, labelled by the mean
  remaining prunable weights.
* ``by_sparsity`` (DPF): rows (model, target sparsity); the dense baseline, then each method's
  final values at that target; the measured sparsity over the prunable set and over all parameters.
* ``paired`` (AP, PAGS): rows (model, base, modified); at each density (target sparsity, else
  round) the pair ``base`` | ``modified`` and Δ = modified − base.

A value slot shows ``layout.metric`` (``mean ± std``, published numbers in parentheses, or
``diverged (k/n)`` / ``collapsed (k/n)``), followed by one column per extra metric of
``layout.columns``. A value that does not exist reads ``—``, whatever the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.report.cells import DASH, Cell, fmt, index, outside, published, remaining_label

if TYPE_CHECKING:
    from harness.config.schema import Experiment, Manifest

KINDS = ("paper", "reference")


@dataclass(frozen=True)
class Table:
    """Header and rows of plain-text cells; ``align`` has one letter (l, r, c) per column and
    ``code`` the columns whose values are identifiers (shown as code in Markdown)."""

    experiment: Experiment
    header: list[str]
    rows: list[list[str]]
    align: str
    code: tuple[int, ...]
    note: str = ""


def value_text(manifest: Manifest, c: Cell | None, metric: str) -> str:
    """'82.3 ± 0.4 (paper 83.0, Δ -0.7; reference 82.0, Δ +0.3)', 'diverged (1/2)', 'collapsed (2/3)' or '—'."""
    if c is None:
        return DASH
    if c.excluded:
        return excluded_text(c)
    s = c.stat(metric)
    text = s.text()
    notes = []
    for kind in KINDS:
        e, diff = published(manifest, c, kind, metric)
        if e is None:
            continue
        if e.value is None:
            notes.append(f"{kind} {DASH}")
        elif diff is None:
            notes.append(f"{kind} {fmt(e.value, s.percent)}")
        else:
            notes.append(f"{kind} {fmt(e.value, s.percent)}, Δ {fmt(diff, s.percent, signed=True)}"
                         + (" ✗" if outside(e, diff) else ""))
    return text + (f" ({'; '.join(notes)})" if notes else "")


def excluded_text(c: Cell) -> str:
    """'diverged (1/3)', 'collapsed (2/3)' or both: the seeds a cell leaves out, of those planned."""
    parts = [f"{what} ({k}/{c.n_planned})" for what, k in (("diverged", c.diverged), ("collapsed", c.collapsed)) if k]
    return ", ".join(parts)


def _slot(manifest: Manifest, e: Experiment, c: Cell | None) -> list[str]:
    return [value_text(manifest, c, m) for m in (e.layout.metric, *e.layout.columns)]


def _slot_header(e: Experiment, label: str) -> list[str]:
    return [label] + [f"{label} {m}" for m in e.layout.columns]


def _n_text(cells: list[Cell | None], metric: str) -> str:
    ns = [c.stat(metric).n for c in cells if c is not None]
    if not ns:
        return "0"
    lo, hi = min(ns), max(ns)
    return str(hi) if lo == hi else f"{lo}–{hi}"


def _method_label(method: str, target: float | None) -> str:
    return method if target is None else f"{method} (sparsity {target:g})"


def _round_label(cells: list[Cell], axis: str, i: int) -> str:
    """The mean remaining weights of a column, or its name when none is recorded or rows disagree."""
    dens = [c.density for c in cells if c.axis == axis and c.index == i and c.density is not None]
    if not dens or max(dens) - min(dens) > 0.02 * max(dens):
        return f"round {i}" if axis == "round" else axis
    return remaining_label(math.fsum(dens) / len(dens))


def _note(e: Experiment, cells: list[Cell]) -> str:
    if e.layout.metric == "test_acc" and not e.layout.columns:
        return ""

    def unit(m: str) -> str:
        percent = any(c.stat(m).percent for c in cells if m in c.metrics)
        return f"`{m}`" + (" (%)" if percent else "")

    extra = f"; extra columns: {', '.join(unit(m) for m in e.layout.columns)}" if e.layout.columns else ""
    return f"Cell value: {unit(e.layout.metric)}{extra}."


def _lead(mine: list[Cell]) -> bool:
    return len({c.dataset for c in mine}) > 1


def by_round(manifest: Manifest, e: Experiment, mine: list[Cell]) -> Table:
    axis = "round" if any(c.axis == "round" for c in mine) else "final"
    mine = [c for c in mine if c.axis == axis]
    cols = sorted({c.index for c in mine})
    multi = _lead(mine)
    header = (["dataset"] if multi else []) + ["model", "method", "n"]
    for i in cols:
        header += _slot_header(e, _round_label(mine, axis, i))
    by_row: dict[tuple, dict[int, Cell]] = {}
    for c in mine:  # already in manifest order
        by_row.setdefault((c.dataset, c.model, c.method, c.target_sparsity), {})[c.index] = c
    rows = []
    for (ds, model, method, target), row_cells in by_row.items():
        row = ([ds] if multi else []) + [model, _method_label(method, target),
                                         _n_text(list(row_cells.values()), e.layout.metric)]
        for i in cols:
            row += _slot(manifest, e, row_cells.get(i))
        rows.append(row)
    lead = int(multi) + 2
    return Table(e, header, rows, "l" * lead + "r" + "c" * (len(header) - lead - 1), tuple(range(lead)), _note(e, mine))


def _sparsity_text(values: list[float]) -> str:
    if not values:
        return DASH
    lo, hi = min(values) * 100, max(values) * 100
    return f"{lo:.2f}%" if hi - lo < 0.005 else f"{lo:.2f}–{hi:.2f}%"


def by_sparsity(manifest: Manifest, e: Experiment, mine: list[Cell]) -> Table:
    idx = index(mine)
    final = [c for c in mine if c.axis == "final"]
    dense_method = e.layout.dense_method
    present = list(dict.fromkeys(c.method for c in final if c.method != dense_method))
    methods = [m for m in e.methods if m in present] + [m for m in present if m not in e.methods]
    keys = list(dict.fromkeys((c.dataset, c.model) for c in mine))
    rows_keys = []
    for ds, model in keys:
        targets = sorted({c.target_sparsity for c in final if (c.dataset, c.model) == (ds, model)
                          and c.method != dense_method and c.target_sparsity is not None})
        rows_keys += [(ds, model, t) for t in targets or [None]]

    def at(ds: str, model: str, method: str, t: float | None, axis: str = "final", i: int = 0) -> Cell | None:
        return idx.get((e.name, ds, model, method, t, axis, i)) or idx.get((e.name, ds, model, method, None, axis, i))

    def dense(ds: str, model: str, t: float | None) -> Cell | None:
        if dense_method is not None:
            return at(ds, model, dense_method, t)
        found = [c for c in (at(ds, model, m, t, "round", 0) for m in methods) if c is not None]
        return next((c for c in found if c.n or c.excluded), found[0] if found else None)

    multi = _lead(mine)
    has_dense = any(dense(*k) is not None for k in rows_keys)
    header = (["dataset"] if multi else []) + ["model", "target", "sparsity", "sparsity (all)", "n"]
    header += _slot_header(e, "dense") if has_dense else []
    for m in methods:
        header += _slot_header(e, m)
    rows = []
    for ds, model, t in rows_keys:
        pruned = [at(ds, model, m, t) for m in methods]
        got = [c for c in pruned if c is not None]
        d = dense(ds, model, t)
        row = ([ds] if multi else []) + [
            model, DASH if t is None else f"{t * 100:g}%",
            _sparsity_text([1 - c.density for c in got if c.density is not None]),
            _sparsity_text([1 - c.stat("density_all").mean for c in got if c.stat("density_all").mean is not None]),
            _n_text(got + ([d] if d else []), e.layout.metric)]
        row += _slot(manifest, e, d) if has_dense else []
        for c in pruned:
            row += _slot(manifest, e, c)
        rows.append(row)
    lead = int(multi) + 1
    return Table(e, header, rows, "l" * lead + "rrrr" + "c" * (len(header) - lead - 4), tuple(range(lead)),
                 _note(e, mine))


def paired(manifest: Manifest, e: Experiment, mine: list[Cell]) -> Table:
    idx = index(mine)
    metric = e.layout.metric
    targets = sorted({c.target_sparsity for c in mine if c.target_sparsity is not None})
    if targets:
        cols = [(t, "final", 0, remaining_label(1 - t)) for t in targets]
    else:
        rounds = sorted({c.index for c in mine if c.axis == "round"})
        cols = [(None, "round", i, _round_label(mine, "round", i)) for i in rounds]
    multi = _lead(mine)
    header = (["dataset"] if multi else []) + ["model", "base", "modified", "n"]
    for *_, label in cols:
        header += [f"{label} base", f"{label} modified", f"{label} Δ"]
        header += [f"{label} {side} {m}" for m in e.layout.columns for side in ("base", "modified")]
    rows = []
    paired_methods = {m for pair in e.layout.pairs for m in pair}
    pairs = list(e.layout.pairs) + [(m, None) for m in e.methods if m not in paired_methods]  # unpaired: base only
    for ds, model in dict.fromkeys((c.dataset, c.model) for c in mine):
        for base, mod in pairs:
            pair_cells = [tuple(idx.get((e.name, ds, model, meth, t, axis, i)) if meth else None for meth in (base, mod))
                          for t, axis, i, _ in cols]
            flat = [c for pc in pair_cells for c in pc if c is not None]
            if not flat:
                continue
            row = ([ds] if multi else []) + [model, base, mod or DASH, _n_text(flat, metric)]
            for b, m in pair_cells:
                sb, sm = (b.stat(metric) if b else None), (m.stat(metric) if m else None)
                if b and m and not (b.excluded or m.excluded) and sb.mean is not None and sm.mean is not None:
                    delta = fmt(sm.shown - sb.shown, sm.percent, signed=True)
                else:
                    delta = DASH
                row += [value_text(manifest, b, metric), value_text(manifest, m, metric), delta]
                row += [value_text(manifest, c, x) for x in e.layout.columns for c in (b, m)]
            rows.append(row)
    lead = int(multi) + 3
    return Table(e, header, rows, "l" * lead + "r" + "c" * (len(header) - lead - 1), tuple(range(lead)), _note(e, mine))


LAYOUTS = {"by_round": by_round, "by_sparsity": by_sparsity, "paired": paired}


def tables(manifest: Manifest, cells: list[Cell]) -> list[Table]:
    """One table per experiment of the manifest, in manifest order."""
    return [LAYOUTS[e.layout.kind](manifest, e, [c for c in cells if c.experiment == e.name])
            for e in manifest.experiments]
