"""Report: tracked runs -> mean ± std over seeds -> paper-style tables, claims and plots.

The pipeline, one module per step:

* :mod:`.collect`: tracker -> :data:`Results` (RunSpec.id -> :class:`RunResult`: rows by axis,
  status, divergence); the report's only MLflow use;
* :mod:`.cells`: Results -> :class:`Cell` (every metric's mean ± std and n over seeds, per group
  and row), display units and the published numbers of a cell;
* :mod:`.claims`: the manifest's claims judged on the cells, against the seeds' noise;
* :mod:`.layouts`: cells -> one :class:`Table` per experiment (by round | by sparsity | paired);
* :mod:`.render`: ``README.md``, ``tables.tex``, ``results.csv``; :mod:`.plot`: one PNG per experiment;
* :mod:`.compare`: the regression check of a fresh ``results.csv`` against a committed reference.

Everything written is deterministic (no timestamps, no absolute paths, stable order, fixed float
formats) so that a committed reference report diffs cleanly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.report.cells import Cell, Stat, aggregate, expected_for, remaining_label
from harness.report.claims import (FAILED, HELD, NOT_ENOUGH_DATA, WITHIN_NOISE, ClaimResult, Verdict, dormant_claims,
                                   evaluate_claims, judge)
from harness.report.collect import Results, RunResult, collect, planned_rows
from harness.report.compare import compare
from harness.report.layouts import Table, tables
from harness.report.plot import plot_experiment
from harness.report.render import KEY_COLUMNS, readme, slug, spec_label, tex, tex_escape, write_csv

if TYPE_CHECKING:
    from harness.config.schema import Manifest

__all__ = [
    "FAILED", "HELD", "KEY_COLUMNS", "NOT_ENOUGH_DATA", "WITHIN_NOISE", "Cell", "ClaimResult", "Results", "RunResult",
    "Stat", "Summary", "Table", "Verdict", "aggregate", "build", "collect", "compare", "dormant_claims",
    "evaluate_claims", "expected_for", "judge", "missing_runs", "planned_rows", "remaining_label", "tables",
    "tex_escape",
]


@dataclass(frozen=True)
class Summary:
    out_dir: Path
    n_cells: int
    n_missing_runs: int
    claims: list[ClaimResult]
    files: list[Path] = field(default_factory=list)


def missing_runs(specs: list[Any], results: Mapping[str, RunResult]) -> list[Any]:
    """Specs whose run has no final row and did not diverge (never started, or unfinished)."""
    return sorted((s for s in specs if s.id not in results or not results[s.id].complete), key=spec_label)


def build(manifest: Manifest, specs: list[Any], results: Mapping[str, RunResult], out_dir: Path) -> Summary:
    """Write ``README.md``, ``results.csv``, ``tables.tex`` and ``<experiment>.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = list(specs)
    results = dict(results)
    cs = aggregate(manifest, specs, results)
    claims = evaluate_claims(manifest, cs, results, specs)
    tabs = tables(manifest, cs)
    missing = missing_runs(specs, results)
    plots = {}
    for e in manifest.experiments:
        plots[e.name] = f"{slug(e.name)}.png"
        plot_experiment(e, cs, out_dir / plots[e.name])
    write_csv(manifest, cs, out_dir / "results.csv")
    (out_dir / "tables.tex").write_text(tex(manifest, tabs), encoding="utf-8")
    (out_dir / "README.md").write_text(readme(manifest, specs, cs, tabs, claims, results, missing, plots),
                                       encoding="utf-8")
    files = [out_dir / "README.md", out_dir / "results.csv", out_dir / "tables.tex",
             *(out_dir / p for p in plots.values())]
    return Summary(out_dir=out_dir, n_cells=len(cs), n_missing_runs=len(missing), claims=claims, files=files)
