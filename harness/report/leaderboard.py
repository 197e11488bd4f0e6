"""One method across the papers: where it stands among each paper's own methods, cell by cell.

For each paper (an overlay that adds the method to the paper's manifest), each experiment and each result cell of
the method (the same rows the paper's tables and claims use: a round, or the final row of a run trained to a target
sparsity), every other method of the paper at the same cell (model, dataset, target or round) is compared on the
experiment's table metric with the claims engine's noise rule (:func:`harness.report.claims.judge`: the seeds'
standard errors, k = 2): the method is *ahead* when the other falls short of it beyond noise, *behind* when it falls
short of the other beyond noise, and *within noise* otherwise. Cells with a diverged or collapsed seed are not
compared, nor round 0 (the dense model every method of a seed shares). The rank counts the methods whose mean is
better (1: none is).

Written as ``README.md`` (a one-page summary per paper, then one table per experiment) and ``leaderboard.csv`` (one
line per comparison), like the reports.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config.schema import Manifest
from harness.report.cells import Cell, aggregate, remaining_label, result_rows
from harness.report.claims import FAILED, judge
from harness.report.collect import RunResult

__all__ = ["Standing", "Board", "standings", "write", "lower_is_better"]

AHEAD, WITHIN, BEHIND = "ahead", "within noise", "behind"


def lower_is_better(metric: str) -> bool:
    """Losses and dead-neuron rates are better low; accuracies (everything else) high."""
    return metric.endswith("loss") or "dnr" in metric or "dead_neuron" in metric


@dataclass(frozen=True)
class Standing:
    paper: str
    experiment: str
    title: str
    dataset: str
    model: str
    where: str  # "3.5% remaining" / "round 4"
    density: float | None
    method: str
    metric: str
    value: str  # "82.3 ± 0.4"
    rank: int
    of: int  # methods at this cell (the method included)
    verdicts: tuple[tuple[str, str, str], ...]  # (other method, its value, AHEAD / WITHIN / BEHIND)

    def of_kind(self, kind: str) -> list[str]:
        return [m for m, _, v in self.verdicts if v == kind]


@dataclass
class Board:
    method: set[str]
    rows: list[Standing] = field(default_factory=list)
    papers: list[tuple[str, str, str]] = field(default_factory=list)  # (paper key, title, profile label)

    def counts(self, paper: str) -> dict[str, int]:
        rows = [r for r in self.rows if r.paper == paper]
        out = {"cells": len(rows), "best": sum(r.rank == 1 for r in rows)}
        for kind in (AHEAD, WITHIN, BEHIND):
            out[kind] = sum(len(r.of_kind(kind)) for r in rows)
        return out


def _where(c: Cell) -> str:
    if c.density is not None and (c.target_sparsity is not None or c.axis == "round"):
        return remaining_label(c.density)
    return f"{c.axis} {c.index}"


def standings(manifest: Manifest, specs: Iterable[Any], results: Mapping[str, RunResult], ours: set[str]) -> list[Standing]:
    """The method's standing at every result cell of ``manifest`` where it ran."""
    cells = result_rows(aggregate(manifest, list(specs), dict(results)))
    groups: dict[tuple, list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.experiment, c.dataset, c.model, c.target_sparsity, c.axis, c.index), []).append(c)
    out = []
    for e in manifest.experiments:
        metric, low = e.layout.metric, lower_is_better(e.layout.metric)
        for key, group in groups.items():
            if key[0] != e.name:
                continue
            if key[4:] == ("round", 0):
                continue  # the dense model every method of a seed starts from: nothing to rank
            usable = [c for c in group if not c.excluded and c.stat(metric).mean is not None]
            for mine in (c for c in usable if c.method in ours):
                a = mine.stat(metric)
                others = [c for c in usable if c.method not in ours]
                verdicts = []
                for o in others:
                    b = o.stat(metric)
                    behind = judge(a.mean, a.std, a.n, b.mean, b.std, b.n, higher_is_better=not low).outcome == FAILED
                    ahead = judge(b.mean, b.std, b.n, a.mean, a.std, a.n, higher_is_better=not low).outcome == FAILED
                    verdicts.append((o.method, b.text(), BEHIND if behind else AHEAD if ahead else WITHIN))
                better = sum((b.stat(metric).mean < a.mean) if low else (b.stat(metric).mean > a.mean) for b in others)
                out.append(Standing(manifest.paper.key, e.name, e.title, mine.dataset, mine.model, _where(mine),
                                    mine.density, mine.method, metric, a.text(), better + 1, len(others) + 1,
                                    tuple(verdicts)))
    return out


def _table(rows: list[Standing]) -> list[str]:
    lines = ["| dataset | model | cell | method | value | rank | ahead of | within noise of | behind |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        names = {k: ", ".join(f"`{m}`" for m in r.of_kind(k)) or "—" for k in (AHEAD, WITHIN, BEHIND)}
        lines.append(f"| `{r.dataset}` | `{r.model}` | {r.where} | `{r.method}` | {r.value} | {r.rank}/{r.of} | "
                     f"{names[AHEAD]} | {names[WITHIN]} | {names[BEHIND]} |")
    return lines


def write(board: Board, out_dir: Path) -> list[Path]:
    """``README.md`` and ``leaderboard.csv`` in ``out_dir``; returns the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    method = ", ".join(f"`{m}`" for m in sorted(board.method))
    lines = [f"# Leaderboard: {method} under each paper's protocol", "",
             "Each paper's own methods at the same cells (model, dataset, target sparsity or round), compared on the "
             "paper table's metric with the claims engine's noise rule (the seeds' standard errors, k = 2): *ahead* "
             "when the other method falls short beyond noise, *behind* when this one does, *within noise* otherwise. "
             "Rank 1 is the best mean at that cell. Cells with a diverged or collapsed seed are not compared.", "",
             "## Summary", "",
             "| paper | profile | cells | best at | comparisons ahead | within noise | behind |", "|---|---|---|---|---|---|---|"]
    for key, title, label in board.papers:
        c = board.counts(key)
        lines.append(f"| {title} (`{key}`) | `{label}` | {c['cells']} | {c['best']} | {c[AHEAD]} | {c[WITHIN]} | "
                     f"{c[BEHIND]} |")
    for key, title, label in board.papers:
        lines += ["", f"## {title} (`{key}`, profile `{label}`)"]
        rows = [r for r in board.rows if r.paper == key]
        if not rows:
            lines += ["", "No cell of the method has results yet."]
        for exp in dict.fromkeys(r.experiment for r in rows):
            these = [r for r in rows if r.experiment == exp]
            lines += ["", f"### {these[0].title}", "", f"Metric: `{these[0].metric}`.", "", *_table(these)]
    readme = out_dir / "README.md"
    readme.write_text("\n".join(lines) + "\n", encoding="utf-8")
    table = out_dir / "leaderboard.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["paper", "experiment", "dataset", "model", "cell", "density", "method", "metric", "value", "rank",
                    "of", "other", "other_value", "verdict"])
        for r in board.rows:
            for other, value, verdict in r.verdicts or (("", "", ""),):
                w.writerow([r.paper, r.experiment, r.dataset, r.model, r.where,
                            "" if r.density is None else f"{r.density:.6f}", r.method, r.metric, r.value, r.rank,
                            r.of, other, value, verdict])
    return [readme, table]
