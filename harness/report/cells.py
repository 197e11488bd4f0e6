"""Results -> :class:`Cell` values: every tracked metric aggregated over seeds.

One cell per group (experiment, dataset, model, method, target sparsity) and row (axis, index):
``mean ± std`` (sample standard deviation) and ``n`` of any metric the runs logged. Every planned
row of a group gets a cell, so a run without data shows up as ``n = 0``. A seed that diverged
before reaching a row (or a diverged run's final row) is counted in ``diverged``, never averaged.
A seed whose result row (a pruning round after the dense one, or the final row) ends within
``layout.collapse_points`` of chance (1 / classes) on ``test_acc`` while its dense model learned
(beyond that band: the run's round 0, else the seed's run of the layout's dense method, else the
run's own best evaluated epoch) *collapsed*: counted in ``collapsed``, never averaged either.

Display units live here too: an accuracy (a metric named ``*_acc`` or ``*_acc_*``, e.g.
``test_acc_at_best_val``) whose values are fractions in [0, 1] is
shown in percent (and compared with published values in percent points); any other metric is a
plain number. :func:`expected_for` finds the published number (``paper`` or ``reference``) of a cell.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.report.collect import RunResult, finite, planned_rows

if TYPE_CHECKING:
    from harness.config.schema import ExpectedCells, Manifest

DASH = "—"
AXES = ("round", "epoch", "snapshot", "final")  # row order within a group; unknown axes follow, by name
EPS = 1e-9  # for densities only (0.8 ** 3 is 0.5120000000000001); values are compared exactly


@dataclass(frozen=True)
class Stat:
    """One metric of one cell over its seeds (raw units; ``percent`` says how it is shown)."""

    mean: float | None = None
    std: float | None = None  # sample std; None when n < 2
    n: int = 0
    percent: bool = False

    @property
    def scale(self) -> float:
        return 100.0 if self.percent else 1.0

    @property
    def shown(self) -> float | None:
        return None if self.mean is None else self.mean * self.scale

    @property
    def shown_std(self) -> float | None:
        return None if self.std is None else self.std * self.scale

    def text(self) -> str:
        """'82.3 ± 0.4', '82.3' (n = 1) or '—' (no data)."""
        if self.mean is None:
            return DASH
        d = decimals(self.shown, self.percent)
        return f"{self.shown:.{d}f}" + ("" if self.std is None else f" ± {self.shown_std:.{d}f}")


@dataclass(frozen=True)
class Cell:
    experiment: str
    dataset: str
    model: str
    method: str
    target_sparsity: float | None
    axis: str
    index: int
    n_planned: int  # seeds in the group
    n: int  # seeds with this row (diverged and collapsed ones excluded)
    diverged: int  # seeds that diverged before this row (or at the end, for "final")
    metrics: Mapping[str, Stat] = field(default_factory=dict)  # metric -> Stat, every metric logged
    collapsed: int = 0  # seeds that ended within the layout's collapse band of chance while their dense model learned
    chance: float | None = None  # 1 / classes

    @property
    def excluded(self) -> bool:
        """Some seed diverged or collapsed: the cell is shown as such and never compared."""
        return bool(self.diverged or self.collapsed)

    def stat(self, metric: str) -> Stat:
        return self.metrics.get(metric) or Stat()

    @property
    def density(self) -> float | None:
        return self.stat("density").mean

    @property
    def key(self) -> tuple:
        return (self.experiment, self.dataset, self.model, self.method, self.target_sparsity, self.axis, self.index)


def decimals(value: float | None, percent: bool) -> int:
    """Fixed digits per magnitude: percent 1; plain numbers 0 (>= 100), 1, 2, else 3 significant."""
    if percent:
        return 1
    a = abs(value or 0.0)
    if a >= 100:
        return 0
    if a >= 10:
        return 1
    if a >= 1:
        return 2
    return 3 if a == 0 else min(6, 2 - math.floor(math.log10(a)))


def fmt(value: float | None, percent: bool, signed: bool = False) -> str:
    if value is None:
        return DASH
    return f"{value:{'+' if signed else ''}.{decimals(value, percent)}f}"


def remaining_label(density: float) -> str:
    """1.0 -> '100%', 0.8 -> '80.0%', 0.0352 -> '3.52%', 0.00922 -> '0.922%'."""
    pct = round(density * 100, 9)  # 1 - 0.9 is 0.09999999999999998
    if pct >= 99.95:
        return "100%"
    if pct >= 10:
        return f"{pct:.1f}%"
    if pct >= 1:
        return f"{pct:.2f}%"
    return f"{pct:.3f}%"


def is_percent(metric: str, values: Iterable[float]) -> bool:
    is_acc = metric.endswith("_acc") or "_acc_" in metric
    return is_acc and all(0.0 <= v <= 1.0 for v in values)


def _row_order(row: tuple[str, int]) -> tuple:
    axis, index = row
    return (AXES.index(axis) if axis in AXES else len(AXES), axis, index)


def sort_key(manifest: Manifest):
    """Groups in the manifest's own order of experiments, datasets, models, methods, then target."""
    exps = {e.name: (i, e) for i, e in enumerate(manifest.experiments)}

    def pos(seq: tuple, item: Any) -> tuple[int, str]:
        return (seq.index(item), "") if item in seq else (len(seq), str(item))

    def key(g: tuple) -> tuple:
        exp, ds, model, method, target = g[:5]
        i, e = exps.get(exp, (len(exps), None))
        t = -1.0 if target is None else target
        if e is None:
            return (i, exp, (0, ds), (0, model), (0, method), t)
        return (i, exp, pos(e.datasets, ds), pos(e.models, model), pos(e.methods, method), t)

    return key


def _acc(row: Mapping[str, float] | None) -> float | None:
    v = finite([row.get("test_acc")]) if row else []
    return v[0] if v else None


def learned_reference(manifest: Manifest, specs: list[Any], results: Mapping[str, RunResult]) -> dict[str, float]:
    """RunSpec.id -> the test accuracy its dense model reached: the run's round 0, else the same seed's run of the
    layout's dense method (same experiment, dataset, model), else the run's own best evaluated epoch."""
    dense_method = {e.name: e.layout.dense_method for e in manifest.experiments}
    by_key = {(s.experiment, s.dataset_key, s.model_key, s.seed, s.method): s for s in specs}
    out: dict[str, float] = {}
    for s in specs:
        r = results.get(s.id)
        ref = _acc(r.row("round", 0)) if r is not None else None
        dm = dense_method.get(s.experiment)
        d = by_key.get((s.experiment, s.dataset_key, s.model_key, s.seed, dm)) if dm and dm != s.method else None
        if ref is None and d is not None and results.get(d.id) is not None:
            ref = _acc(results[d.id].row("final", 0))
        if ref is None and r is not None:
            epochs = [a for a in (_acc(v) for v in r.rows.get("epoch", {}).values()) if a is not None]
            ref = max(epochs) if epochs else None
        if ref is not None:
            out[s.id] = ref
    return out


def is_collapsed(axis: str, index: int, row: Mapping[str, float] | None, chance: float, reference: float | None,
                 points: float) -> bool:
    """A result row (round >= 1 or final) within ``points`` of chance on test_acc while the dense model learned."""
    acc = _acc(row)
    if axis not in ("round", "final") or (axis == "round" and index == 0) or acc is None or reference is None:
        return False
    band = chance + points / 100.0
    return acc <= band + EPS and reference > band + EPS


def aggregate(manifest: Manifest, specs: Iterable[Any], results: Mapping[str, RunResult]) -> list[Cell]:
    """One :class:`Cell` per group and row, in manifest order, rows by axis then index."""
    specs = list(specs)
    groups: dict[tuple, list[Any]] = {}
    for s in specs:
        groups.setdefault((s.experiment, s.dataset_key, s.model_key, s.method, s.target_sparsity), []).append(s)
    reference = learned_reference(manifest, specs, results)
    points = {e.name: e.layout.collapse_points for e in manifest.experiments}
    raw: list[tuple[tuple, int, int, int, int, float | None, dict[str, list[float]]]] = []
    for g in sorted(groups, key=sort_key(manifest)):
        members = sorted(groups[g], key=lambda s: (s.seed, s.id))
        runs = [results.get(s.id) for s in members]
        chance = 1.0 / members[0].num_classes if getattr(members[0], "num_classes", 0) else None
        rows: set[tuple[str, int]] = set()
        for s, r in zip(members, runs):
            rows.update(planned_rows(s))
            if r is not None:
                rows.update((axis, i) for axis, by_index in r.rows.items() for i in by_index)
        for axis, index in sorted(rows, key=_row_order):
            n = diverged = collapsed = 0
            values: dict[str, list[float]] = {}
            for s, r in zip(members, runs):
                row = r.row(axis, index) if r is not None else None
                if r is not None and r.diverged and (axis == "final" or row is None
                                                     or len(finite(row.values())) < len(row)):
                    diverged += 1
                elif row is not None and chance is not None and is_collapsed(
                        axis, index, row, chance, reference.get(s.id), points.get(g[0], 5.0)):
                    collapsed += 1  # its outcome is not averaged; its density still labels the cell
                    values.setdefault("density", []).extend(finite([row.get("density")]))
                elif row is not None:
                    n += 1
                    for k, v in row.items():
                        values.setdefault(k, []).extend(finite([v]))
            raw.append(((*g, axis, index), len(members), n, diverged, collapsed, chance, values))
    seen: dict[str, list[float]] = {}
    for *_, values in raw:
        for k, vs in values.items():
            seen.setdefault(k, []).extend(vs)
    percent = {k for k, vs in seen.items() if is_percent(k, vs)}
    out = []
    for key, planned, n, diverged, collapsed, chance, values in raw:
        stats = {k: Stat(mean=math.fsum(vs) / len(vs) if vs else None,
                         std=statistics.stdev(vs) if len(vs) >= 2 else None, n=len(vs), percent=k in percent)
                 for k, vs in sorted(values.items())}
        out.append(Cell(*key, n_planned=planned, n=n, diverged=diverged, metrics=stats, collapsed=collapsed,
                        chance=chance))
    return out


def result_rows(cells: Iterable[Cell]) -> list[Cell]:
    """The rows that are results: the final row of a run trained to a target sparsity (whatever
    its procedure: one-shot's rounds included, so methods meet at the same cell), else the
    pruning rounds, else the final row (epoch rows are training curves)."""
    cells = list(cells)
    with_rounds = {c.key[:5] for c in cells if c.axis == "round"}
    return [c for c in cells
            if (c.axis == "final" and (c.target_sparsity is not None or c.key[:5] not in with_rounds))
            or (c.axis == "round" and c.target_sparsity is None)]


def index(cells: Iterable[Cell]) -> dict[tuple, Cell]:
    return {c.key: c for c in cells}


def expected_for(manifest: Manifest, cell: Cell, kind: str, metric: str) -> ExpectedCells | None:
    """The ``kind`` ("paper" or "reference") entry of the manifest for ``metric`` at this cell.

    ``rounds`` select round rows; ``sparsities`` select final rows by target sparsity (a run
    without a target counts as sparsity 0: a dense baseline). A later entry overrides an earlier one.
    """
    found = None
    for e in manifest.expected:
        if (e.kind != kind or e.metric != metric or e.experiment != cell.experiment or cell.model not in e.models
                or cell.method not in e.methods or (e.datasets and cell.dataset not in e.datasets)):
            continue
        target = cell.target_sparsity if cell.target_sparsity is not None else 0.0
        if ((cell.axis == "round" and cell.index in e.rounds)
                or (cell.axis == "final" and any(abs(target - s) < EPS for s in e.sparsities))):
            found = e
    return found


def published(manifest: Manifest, cell: Cell, kind: str, metric: str) -> tuple[ExpectedCells | None, float | None]:
    """(entry, ours − published in display units) for one kind of published number."""
    e = expected_for(manifest, cell, kind, metric)
    ours = cell.stat(metric).shown
    diff = ours - e.value if e is not None and e.value is not None and ours is not None and not cell.excluded else None
    return e, diff


def outside(e: ExpectedCells | None, diff: float | None) -> bool:
    return e is not None and diff is not None and e.tolerance is not None and abs(diff) > e.tolerance + EPS
