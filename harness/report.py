"""Report: MLflow rows -> mean ± std over seeds -> paper-style tables, claims and plots.

The flow is four plain functions:

* :func:`collect` reads each run's per-round metrics from the tracker (the only MLflow use),
* :func:`cells` aggregates them over seeds into :class:`Cell` values, one per
  (experiment, dataset, model, method, target sparsity, round), with the paper's number beside,
* :func:`evaluate_claims` checks the manifest's qualitative claims against the cells,
* :func:`build` writes ``README.md``, ``results.csv``, ``tables.tex`` and one PNG per experiment.

:func:`compare` is the regression check of a fresh ``results.csv`` against a committed reference.

Everything written is deterministic (no timestamps, no absolute paths, stable ordering, fixed float
formats) so that a committed reference report diffs cleanly. Accuracies are fractions in the
tracker and in :class:`Cell`; every output shows them in percent. Paper values, tolerances and
differences are in percent points.
"""

from __future__ import annotations

import csv
import math
import re
import statistics
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.manifest import Claim, ExpectedCells, Experiment, Manifest, RunSpec

Results = dict[str, dict[int, dict[str, float]]]
"""RunSpec.id -> round -> metric -> value (as :meth:`harness.tracking.Tracker.rows` returns)."""

CSV_COLUMNS = (
    "experiment", "dataset", "model", "method", "target_sparsity", "round", "remaining", "n",
    "test_acc_mean", "test_acc_std", "train_acc_mean", "test_loss_mean", "macs_fraction_mean",
    "paper_value", "paper_tolerance", "diff",
)
KEY_COLUMNS = ("experiment", "dataset", "model", "method", "target_sparsity", "round")

HELD, FAILED, NOT_ENOUGH_DATA = "held", "failed", "not enough data"
DASH = "—"
_EPS = 1e-9
_MAX_LISTED_MISSING = 50


class _Tracker(Protocol):
    def find(self, paper: str, run_id: str) -> Any: ...

    def rows(self, mlflow_run_id: str) -> dict[int, dict[str, float]]: ...


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Cell:
    """One table cell: a grid point aggregated over the seeds that have data for it.

    ``test_acc_*``/``train_acc_mean`` are fractions; ``paper_value``, ``paper_tolerance`` and
    ``diff`` are percent points. ``expected`` is True when an ``expected`` entry of the manifest
    covers this cell (its value may still be null).
    """

    experiment: str
    dataset: str
    model: str
    method: str
    target_sparsity: float | None
    round: int
    n: int
    test_acc_mean: float | None
    test_acc_std: float | None
    density_mean: float | None
    train_acc_mean: float | None
    test_loss_mean: float | None
    macs_fraction_mean: float | None
    expected: bool = False
    paper_value: float | None = None
    paper_tolerance: float | None = None
    paper_source: str | None = None
    diff: float | None = None

    @property
    def remaining(self) -> float | None:
        """Remaining prunable weights in percent."""
        return None if self.density_mean is None else self.density_mean * 100

    @property
    def outside_tolerance(self) -> bool:
        return self.diff is not None and self.paper_tolerance is not None and abs(self.diff) > self.paper_tolerance + _EPS


@dataclass(frozen=True)
class ClaimResult:
    id: str
    text: str
    outcome: str  # HELD, FAILED or NOT_ENOUGH_DATA
    evidence: str


@dataclass(frozen=True)
class Summary:
    out_dir: Path
    n_cells: int
    n_missing_runs: int
    claims: list[ClaimResult]
    files: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------- collect


def collect(specs: list[RunSpec], tracker: _Tracker) -> Results:
    """Per-round metrics of every spec that has an MLflow run; specs without one are skipped."""
    out: Results = {}
    for spec in specs:
        run = tracker.find(spec.paper, spec.id)
        if run is None:
            continue
        rows = tracker.rows(run.info.run_id)
        if rows:
            out[spec.id] = {int(k): dict(v) for k, v in rows.items()}
    return out


# --------------------------------------------------------------------------- aggregation


_GroupKey = tuple[str, str, str, str, float | None]  # experiment, dataset, model, method, target


def _planned_rounds(spec: RunSpec) -> range | tuple[int, ...]:
    """The rounds a finished run logs: 0 (dense) .. R for iterative pruning, one row (round 1)
    for a procedure that trains to its target in a single stage."""
    if spec.procedure == "iterative":
        return range(spec.pruning.rounds + 1)
    return (1,)


def _finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def _mean(values: Iterable[Any]) -> float | None:
    vals = _finite(values)
    return math.fsum(vals) / len(vals) if vals else None


def _group_sort_key(manifest: Manifest):
    """A sort key that follows the manifest's own order of experiments, datasets, models, methods."""
    exps = {e.name: (i, e) for i, e in enumerate(manifest.experiments)}

    def index(seq: tuple, item: Any) -> tuple[int, str]:
        return (seq.index(item), "") if item in seq else (len(seq), str(item))

    def key(g: _GroupKey) -> tuple:
        exp, ds, model, method, target = g
        i, e = exps.get(exp, (len(exps), None))
        if e is None:
            return (i, exp, (0, ds), (0, model), (0, method), -1.0 if target is None else target)
        return (i, exp, index(e.datasets, ds), index(e.models, model), index(e.methods, method),
                -1.0 if target is None else target)

    return key


def _expected_for(manifest: Manifest, exp: str, ds: str, model: str, method: str, rnd: int) -> ExpectedCells | None:
    """The manifest entry covering a cell; a later entry overrides an earlier one."""
    found = None
    for c in manifest.expected:
        if (c.experiment == exp and model in c.models and method in c.methods and rnd in c.rounds
                and (not c.datasets or ds in c.datasets)):
            found = c
    return found


def cells(manifest: Manifest, specs: list[RunSpec], results: Mapping[str, Mapping[int, Mapping[str, float]]]) -> list[Cell]:
    """Aggregate ``results`` over seeds: one :class:`Cell` per grid point and round.

    Every planned round of every spec's group gets a cell, so a run without data shows up as a
    cell with ``n = 0``; rounds present in the data but not planned are kept too.
    """
    groups: dict[_GroupKey, list[RunSpec]] = {}
    for spec in specs:
        g = (spec.experiment, spec.dataset_key, spec.model_key, spec.method, spec.target_sparsity)
        groups.setdefault(g, []).append(spec)
    out: list[Cell] = []
    for g in sorted(groups, key=_group_sort_key(manifest)):
        exp, ds, model, method, target = g
        members = sorted(groups[g], key=lambda s: (s.seed, s.id))
        per_seed = [{int(k): v for k, v in results.get(s.id, {}).items()} for s in members]
        rounds: set[int] = set()
        for s, data in zip(members, per_seed):
            rounds.update(_planned_rounds(s))
            rounds.update(data)
        for rnd in sorted(rounds):
            # a seed counts for a round when it has a test accuracy there
            rows = [data[rnd] for data in per_seed if rnd in data and _finite([data[rnd].get("test_acc")])]
            accs = _finite(r.get("test_acc") for r in rows)
            n = len(accs)
            mean = math.fsum(accs) / n if n else None
            std = statistics.stdev(accs) if n >= 2 else None
            e = _expected_for(manifest, exp, ds, model, method, rnd)
            value = e.value if e else None
            out.append(Cell(
                experiment=exp, dataset=ds, model=model, method=method, target_sparsity=target, round=rnd,
                n=n, test_acc_mean=mean, test_acc_std=std,
                density_mean=_mean(r.get("density") for r in rows),
                train_acc_mean=_mean(r.get("train_acc") for r in rows),
                test_loss_mean=_mean(r.get("test_loss") for r in rows),
                macs_fraction_mean=_mean(r.get("macs_fraction") for r in rows),
                expected=e is not None, paper_value=value, paper_tolerance=e.tolerance if e else None,
                paper_source=e.source if e else None,
                diff=mean * 100 - value if mean is not None and value is not None else None,
            ))
    return out


# --------------------------------------------------------------------------- claims


def _pct_threshold(density: float) -> str:
    return f"{density * 100:g}%"


def _remaining_label(density: float) -> str:
    """1.0 -> '100%', 0.8 -> '80.0%', 0.0352 -> '3.52%', 0.00922 -> '0.922%'."""
    pct = density * 100
    if pct >= 99.95:
        return "100%"
    if pct >= 10:
        return f"{pct:.1f}%"
    if pct >= 1:
        return f"{pct:.2f}%"
    return f"{pct:.3f}%"


def _method_label(method: str, target: float | None) -> str:
    return method if target is None else f"{method} (sparsity {target:g})"


def _evaluate_claim(claim: Claim, exp: Experiment, cs: list[Cell]) -> ClaimResult:
    mine = [c for c in cs if c.experiment == claim.experiment]
    present = [m for m in exp.models if any(c.model == m for c in mine)]
    present += sorted({c.model for c in mine} - set(present))
    models = list(claim.models) or present
    index = {(c.dataset, c.model, c.method, c.target_sparsity, c.round): c for c in mine}
    baselines = ", ".join(claim.b)
    compared_cells: set[tuple] = set()
    comparisons = 0
    failures: list[str] = []
    uncompared: list[str] = []
    a_with_data = [c for c in mine if c.method == claim.a and c.n >= 1 and c.test_acc_mean is not None]
    for model in models:
        model_compared = 0
        a_cells = [c for c in a_with_data if c.model == model]
        for a in a_cells:
            if a.density_mean is None or a.density_mean > claim.max_density + _EPS:
                continue
            for b_method in claim.b:
                b = index.get((a.dataset, a.model, b_method, a.target_sparsity, a.round))
                if b is None or b.n < 1 or b.test_acc_mean is None:
                    continue
                comparisons += 1
                model_compared += 1
                compared_cells.add((a.dataset, a.model, a.target_sparsity, a.round))
                va, vb = a.test_acc_mean * 100, b.test_acc_mean * 100
                if va < vb - claim.margin - _EPS:
                    where = f"{model}" + (f" on {a.dataset}" if len(exp.datasets) > 1 else "")
                    if a.target_sparsity is not None:
                        where += f" (sparsity {a.target_sparsity:g})"
                    failures.append(f"{where}, round {a.round} ({_remaining_label(a.density_mean)} remaining): "
                                    f"{claim.a} {va:.1f} < {b_method} {vb:.1f}")
        if model_compared == 0:
            uncompared.append(model)
    margin = f", margin {claim.margin:g} points" if claim.margin else ""
    if failures:
        shown = "; ".join(failures[:3]) + (f"; and {len(failures) - 3} more" if len(failures) > 3 else "")
        return ClaimResult(claim.id, claim.text, FAILED,
                           f"{claim.a} below a baseline in {len(failures)} of {comparisons} comparisons{margin}: {shown}")
    if comparisons:
        n = len(compared_cells)
        extra = f" ({comparisons} comparisons{margin})" if comparisons != n or margin else ""
        note = f"; not compared: {', '.join(uncompared)} (no data)" if uncompared else ""
        return ClaimResult(claim.id, claim.text, HELD,
                           f"{claim.a} >= {baselines} at all {n} compared cell{'s' if n != 1 else ''}{extra}{note}")
    # Why nothing could be compared.
    relevant = [c for c in a_with_data if c.model in models]
    if not relevant:
        why = f"no data for {claim.a}" + (f" on {', '.join(models)}" if claim.models else "")
    else:
        densities = [c.density_mean for c in relevant if c.density_mean is not None]
        if not any(d <= claim.max_density + _EPS for d in densities):
            lowest = f" (lowest recorded: {_remaining_label(min(densities))})" if densities else ""
            why = f"no cell with remaining weights <= {_pct_threshold(claim.max_density)}{lowest}"
        else:
            why = (f"no data for {baselines} at the {claim.a} cells with remaining weights "
                   f"<= {_pct_threshold(claim.max_density)}")
    return ClaimResult(claim.id, claim.text, NOT_ENOUGH_DATA, why)


def evaluate_claims(manifest: Manifest, cells: list[Cell]) -> list[ClaimResult]:
    """Check every claim whose experiment is part of the manifest (profile); see :class:`Claim`.

    For each model (``claim.models`` or all models present), dataset and baseline ``b``, the cells
    of the same round where both methods have data and ``a``'s mean density is at most
    ``claim.max_density`` are compared: the claim fails if ``a`` is more than ``claim.margin``
    points below ``b`` at any of them, holds if at least one cell was compared and none failed,
    and has "not enough data" otherwise. Claims about experiments a profile dropped are dormant
    and not returned (see :func:`dormant_claims`).
    """
    exps = {e.name: e for e in manifest.experiments}
    return [_evaluate_claim(c, exps[c.experiment], cells) for c in manifest.claims if c.experiment in exps]


def dormant_claims(manifest: Manifest) -> list[Claim]:
    """Claims about experiments that are not part of this manifest's profile."""
    names = {e.name for e in manifest.experiments}
    return [c for c in manifest.claims if c.experiment not in names]


# --------------------------------------------------------------------------- formatting


def _fmt(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _acc_text(c: Cell) -> str:
    """'82.3 ± 0.4', '82.3' (n = 1) or '—', then the paper's value when one is expected."""
    if c.test_acc_mean is None:
        text = DASH
    elif c.test_acc_std is None:
        text = f"{c.test_acc_mean * 100:.1f}"
    else:
        text = f"{c.test_acc_mean * 100:.1f} ± {c.test_acc_std * 100:.1f}"
    if c.expected:
        if c.paper_value is None:
            text += f" (paper {DASH})"
        elif c.diff is None:
            text += f" (paper {c.paper_value:.1f})"
        else:
            text += f" (paper {c.paper_value:.1f}, Δ {c.diff:+.1f}{' ✗' if c.outside_tolerance else ''})"
    return text


@dataclass(frozen=True)
class _Table:
    """One experiment's table: header cells, then rows of plain-text cells."""

    experiment: Experiment
    header: list[str]
    rows: list[list[str]]


def _n_text(ns: list[int]) -> str:
    lo, hi = min(ns), max(ns)
    return str(hi) if lo == hi else f"{lo}–{hi}"


def _tables(manifest: Manifest, cs: list[Cell]) -> list[_Table]:
    tables = []
    for e in manifest.experiments:
        mine = [c for c in cs if c.experiment == e.name]
        rounds = sorted({c.round for c in mine})
        labels = []
        for r in rounds:
            dens = [c.density_mean for c in mine if c.round == r and c.density_mean is not None]
            if not dens or max(dens) - min(dens) > 0.02 * max(dens):  # none recorded, or rows disagree
                labels.append(f"round {r}")
            else:
                labels.append(_remaining_label(math.fsum(dens) / len(dens)))
        multi_ds = len({c.dataset for c in mine}) > 1
        header = (["dataset"] if multi_ds else []) + ["model", "method", "n"] + labels
        rows_by_key: dict[tuple, dict[int, Cell]] = {}
        for c in mine:  # cells are already in manifest order
            rows_by_key.setdefault((c.dataset, c.model, c.method, c.target_sparsity), {})[c.round] = c
        rows = []
        for (ds, model, method, target), by_round in rows_by_key.items():
            row = ([ds] if multi_ds else []) + [model, _method_label(method, target),
                                                _n_text([c.n for c in by_round.values()])]
            row += [_acc_text(by_round[r]) if r in by_round else "" for r in rounds]
            rows.append(row)
        tables.append(_Table(e, header, rows))
    return tables


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]], left: int, code: Iterable[int] = ()) -> list[str]:
    """A GitHub Markdown table; the first ``left`` columns are left-aligned, the rest right."""
    code = set(code)

    def cell(i: int, v: str) -> str:
        return f"`{v}`" if i in code and v else _md_escape(v)

    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |",
             "|" + "|".join(":---" if i < left else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(cell(i, v) for i, v in enumerate(row)) + " |" for row in rows]
    return lines


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_TEX_UNICODE = {"±": r"$\pm$", "Δ": r"$\Delta$", "—": "---", "–": "--", "✗": r"$\times$", "≥": r"$\geq$",
                "≤": r"$\leq$", "§": r"\S{}"}


def tex_escape(text: str) -> str:
    """Escape LaTeX specials (%, _, &, ...) and spell the few non-ASCII symbols the tables use."""
    out = "".join(_TEX_SPECIAL.get(ch, ch) for ch in text)
    for uni, tex in _TEX_UNICODE.items():
        out = out.replace(uni, tex)
    return out


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "experiment"


# --------------------------------------------------------------------------- writers


def _spec_label(s: RunSpec) -> str:
    target = f"/sp{s.target_sparsity:g}" if s.target_sparsity is not None else ""
    return f"{s.experiment}/{s.model_key}/{s.dataset_key}/{s.method}{target}/s{s.seed}"


def _paper_lines(manifest: Manifest) -> list[str]:
    p = manifest.paper
    refs = [f"{p.venue} {p.year}"]
    if p.arxiv:
        refs.append(f"arXiv [{p.arxiv}](https://arxiv.org/abs/{p.arxiv})")
    if p.openreview:
        refs.append(f"OpenReview [{p.openreview}](https://openreview.net/forum?id={p.openreview})")
    if p.code:
        url = p.code if "://" in p.code else f"https://github.com/{p.code}"
        name = p.code + (f"@{p.commit}" if p.commit else "")
        if p.commit and "://" not in p.code:
            url += f"/tree/{p.commit}"
        refs.append(f"reference code [{name}]({url})")
    return [f"# {p.title}", "", "Reproduction report: " + " · ".join(refs) + ".", "",
            f"Profile `{manifest.profile}` of `{Path(manifest.path).name or p.key + '.yaml'}` "
            f"(manifest digest `{manifest.digest or 'n/a'}`).", ""]


_HOW_TO_READ = (
    "## How to read this\n\n"
    "Each table is one experiment of the paper. Rows are (model, method); `n` is the number of "
    "seeds with data. Columns are pruning rounds, labelled by the mean fraction of prunable weights "
    "that remain (100% is the dense model). A cell is the test accuracy in percent, `mean ± std` over "
    "seeds (sample standard deviation; the mean alone when n = 1; — when no run has produced data). "
    "Where the manifest records the paper's number, it follows in parentheses with the difference "
    "Δ = ours − paper in percent points, marked ✗ when outside the manifest's tolerance; "
    "`(paper —)` means the paper's value is not yet recorded. Claims are the paper's qualitative "
    "statements checked on mean test accuracy: *held* (true at every compared cell), *failed* "
    "(false at one or more, named in the evidence) or *not enough data*. `results.csv` has every "
    "cell with more digits; `tables.tex` has the same tables for LaTeX (booktabs)."
)


def _readme(manifest: Manifest, specs: list[RunSpec], cs: list[Cell], claims: list[ClaimResult],
            missing: list[RunSpec], plots: dict[str, str]) -> str:
    lines = _paper_lines(manifest)
    seeds = {e.name: len(e.seeds) for e in manifest.experiments}
    short = sum(1 for c in cs if c.n < seeds.get(c.experiment, 0))
    if missing or short:
        lines += [f"> **Incomplete report**: {len(missing)} of {len(specs)} runs have no results and "
                  f"{short} of {len(cs)} cells have fewer seeds than planned. Run `prunebench run` with "
                  f"the same manifest and profile to finish the grid; cells marked — are not computed.", ""]
    lines += [_HOW_TO_READ, ""]
    for t in _tables(manifest, cs):
        e = t.experiment
        lines += [f"## {e.title}", "", f"Experiment `{e.name}`: datasets {', '.join(f'`{d}`' for d in e.datasets)}; "
                  f"seeds {', '.join(str(s) for s in e.seeds)}.", ""]
        if e.note:
            lines += [f"Note: {e.note}", ""]
        lead = 1 if t.header[0] == "dataset" else 0
        lines += _md_table(t.header, t.rows, left=lead + 2, code=range(lead + 2)) + [""]
        if e.name in plots:
            lines += [f"![{e.name}: test accuracy against remaining weights]({plots[e.name]})", ""]
    lines += ["## Claims", ""]
    if claims:
        rows = [[c.id, c.text, f"**{c.outcome}**", c.evidence] for c in claims]
        lines += _md_table(["id", "claim", "outcome", "evidence"], rows, left=4, code=[0]) + [""]
    else:
        lines += ["No claims for the experiments of this profile.", ""]
    dormant = dormant_claims(manifest)
    if dormant:
        lines += [f"Not evaluated (their experiments are not part of profile `{manifest.profile}`): "
                  + ", ".join(f"`{c.id}`" for c in dormant) + ".", ""]
    lines += ["## Deviations from the paper and its code", ""]
    lines += [f"- **{d.name}**: {d.reason}" for d in manifest.deviations] or ["None recorded."]
    lines += [""]
    if missing:
        lines += ["## Missing runs", "", f"{len(missing)} of {len(specs)} runs have no data yet:", ""]
        lines += [f"- `{_spec_label(s)}` (`{s.id}`)" for s in missing[:_MAX_LISTED_MISSING]]
        if len(missing) > _MAX_LISTED_MISSING:
            lines += [f"- ... and {len(missing) - _MAX_LISTED_MISSING} more"]
        lines += [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _csv_row(c: Cell) -> list[str]:
    pct = (lambda v: None if v is None else v * 100)
    return [c.experiment, c.dataset, c.model, c.method, "" if c.target_sparsity is None else repr(float(c.target_sparsity)),
            str(c.round), _fmt(c.remaining, 6), str(c.n), _fmt(pct(c.test_acc_mean)), _fmt(pct(c.test_acc_std)),
            _fmt(pct(c.train_acc_mean)), _fmt(c.test_loss_mean), _fmt(c.macs_fraction_mean),
            _fmt(c.paper_value), _fmt(c.paper_tolerance), _fmt(c.diff)]


def write_csv(cs: list[Cell], path: Path) -> None:
    """``results.csv``: one row per cell; accuracies in %, 4 decimals (remaining %: 6); '' = none."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        w.writerows(_csv_row(c) for c in cs)


def _tex(manifest: Manifest, cs: list[Cell]) -> str:
    out = [f"% {tex_escape(manifest.paper.title)}: profile {manifest.profile}, manifest digest {manifest.digest}",
           "% test accuracy (%), mean $\\pm$ std over seeds; requires \\usepackage{booktabs}", ""]
    for t in _tables(manifest, cs):
        e = t.experiment
        lead = 1 if t.header[0] == "dataset" else 0
        spec = "l" * (lead + 2) + "r" + "c" * (len(t.header) - lead - 3)
        out += [f"% experiment {e.name}", r"\begin{table}[t]", r"\centering", r"\small",
                f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
                " & ".join(tex_escape(h) for h in t.header) + r" \\", r"\midrule"]
        out += [" & ".join(tex_escape(v) for v in row) + r" \\" for row in t.rows]
        out += [r"\bottomrule", r"\end{tabular}", f"\\caption{{{tex_escape(e.title)}}}",
                f"\\label{{tab:{_slug(e.name)}}}", r"\end{table}", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def _plot(e: Experiment, cs: list[Cell], path: Path) -> None:
    """Test accuracy against remaining weights: one subplot per (model, dataset), a line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    mine = [c for c in cs if c.experiment == e.name]
    panels: list[tuple[str, str]] = []
    for c in mine:
        if (c.model, c.dataset) not in panels:
            panels.append((c.model, c.dataset))
    panels = panels or [(m, d) for m in e.models for d in e.datasets]
    ncols = min(len(panels), 3)
    nrows = -(-len(panels) // ncols)
    width = max(6.4, 4.8 * ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, 3.6 * nrows + 0.4), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (model, ds) in zip(axes.flat, panels):
        lines: dict[tuple[str, float | None], list[Cell]] = {}
        for c in mine:
            if c.model == model and c.dataset == ds and c.n >= 1 and c.density_mean and c.test_acc_mean is not None:
                lines.setdefault((c.method, c.target_sparsity), []).append(c)
        xs_all: set[float] = set()
        for (method, target), pts in lines.items():
            pts.sort(key=lambda c: -c.density_mean)
            xs = [c.density_mean * 100 for c in pts]
            xs_all.update(round(x, 6) for x in xs)
            ax.errorbar(xs, [c.test_acc_mean * 100 for c in pts],
                        yerr=[(c.test_acc_std or 0.0) * 100 for c in pts],
                        marker="o", markersize=3, capsize=2, linewidth=1.2, label=_method_label(method, target))
        ax.set_title(f"{model} · {ds}", fontsize=10)
        ax.set_xlabel("remaining weights (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, which="major", alpha=0.3)
        if lines:
            ax.set_xscale("log")
            ticks = sorted(xs_all, reverse=True)
            if len(ticks) > 8:  # at most 8 labels, both ends included
                ticks = [ticks[round(i * (len(ticks) - 1) / 7)] for i in range(8)]
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticklabels([_remaining_label(t / 100) for t in ticks], rotation=45, fontsize=8)
            ax.set_xlim(max(xs_all) * 1.15, min(xs_all) / 1.15)  # inverted: pruning goes right
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(textwrap.fill(e.title, width=int(width * 11)), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def build(manifest: Manifest, specs: list[RunSpec], results: Mapping[str, Mapping[int, Mapping[str, float]]],
          out_dir: Path) -> Summary:
    """Write README.md, results.csv, tables.tex and ``<experiment>.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cs = cells(manifest, specs, results)
    claims = evaluate_claims(manifest, cs)
    missing = [s for s in specs if not any(_finite([row.get("test_acc")]) for row in results.get(s.id, {}).values())]
    files: list[Path] = []
    plots: dict[str, str] = {}
    for e in manifest.experiments:
        name = f"{_slug(e.name)}.png"
        _plot(e, cs, out_dir / name)
        plots[e.name] = name
        files.append(out_dir / name)
    write_csv(cs, out_dir / "results.csv")
    (out_dir / "tables.tex").write_text(_tex(manifest, cs), encoding="utf-8")
    (out_dir / "README.md").write_text(_readme(manifest, specs, cs, claims, missing, plots), encoding="utf-8")
    files = [out_dir / "README.md", out_dir / "results.csv", out_dir / "tables.tex", *files]
    return Summary(out_dir=out_dir, n_cells=len(cs), n_missing_runs=len(missing), claims=claims, files=files)


# --------------------------------------------------------------------------- regression check


def _read_csv(path: Path) -> tuple[dict[tuple[str, ...], dict[str, str]], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        absent = [c for c in (*KEY_COLUMNS, "remaining", "n", "test_acc_mean") if c not in (reader.fieldnames or [])]
        if absent:
            return {}, [f"{path}: missing column(s) {', '.join(absent)}"]
        rows = {}
        problems = []
        for row in reader:
            key = tuple(row[c] for c in KEY_COLUMNS)
            if key in rows:
                problems.append(f"{path}: duplicate row {_key_text(key)}")
            rows[key] = row
        return rows, problems


def _key_text(key: tuple[str, ...]) -> str:
    exp, ds, model, method, target, rnd = key
    return f"{exp}/{ds}/{model}/{method}{'/sp' + target if target else ''}/round {rnd}"


def _num(text: str) -> float | None:
    return float(text) if text.strip() else None


def compare(reference_csv: Path, current_csv: Path, acc_tol: float = 5.0, density_tol: float = 1e-6) -> list[str]:
    """The regression check: problems (one line each) of ``current_csv`` against ``reference_csv``.

    Every reference row must be present with the same ``n``, ``remaining`` within
    ``density_tol * 100`` (remaining is in %) and ``test_acc_mean`` within ``acc_tol`` points;
    rows only one file has are problems. An empty list means the check passed.
    """
    ref, problems = _read_csv(Path(reference_csv))
    cur, more = _read_csv(Path(current_csv))
    problems += more
    if problems:
        return problems
    for key, r in ref.items():
        where = _key_text(key)
        c = cur.get(key)
        if c is None:
            problems.append(f"{where}: missing from {current_csv}")
            continue
        if r["n"] != c["n"]:
            problems.append(f"{where}: n = {c['n']}, reference {r['n']}")
        for col, tol in (("remaining", density_tol * 100), ("test_acc_mean", acc_tol)):
            a, b = _num(r[col]), _num(c[col])
            if a is None and b is None:
                continue
            if a is None or b is None:
                problems.append(f"{where}: {col} {'empty' if b is None else c[col]}, reference {'empty' if a is None else r[col]}")
            elif abs(a - b) > tol + _EPS:
                problems.append(f"{where}: {col} {b:.4f}, reference {a:.4f} (|Δ| {abs(a - b):.4f} > {tol:g})")
    for key in cur:
        if key not in ref:
            problems.append(f"{_key_text(key)}: not in reference {reference_csv}")
    return problems
