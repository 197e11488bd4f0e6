"""Tables, claims and cells -> ``README.md`` (Markdown), ``tables.tex`` (LaTeX, booktabs) and
``results.csv``. Deterministic: no timestamps, no absolute paths, stable order, fixed formats."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.pruning.methods import dense_spec, procedure
from harness.report.cells import Cell, published
from harness.report.claims import ClaimResult, dormant_claims
from harness.report.collect import RunResult
from harness.report.layouts import Table

if TYPE_CHECKING:
    from harness.config.schema import Manifest

KEY_COLUMNS = ("experiment", "dataset", "model", "method", "target_sparsity", "axis", "index")
_MAX_LISTED = 50

# --------------------------------------------------------------------------- text helpers


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[str]], align: str, code: Iterable[int] = ()) -> list[str]:
    """A GitHub Markdown table; ``align`` 'l' is left, anything else right."""
    code = set(code)

    def cell(i: int, v: str) -> str:
        return f"`{v}`" if i in code and v else _md_escape(v)

    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |",
             "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(cell(i, v) for i, v in enumerate(row)) + " |" for row in rows]
    return lines


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_TEX_UNICODE = {"±": r"$\pm$", "Δ": r"$\Delta$", "—": "---", "–": "--", "✗": r"$\times$", "≥": r"$\geq$",
                "≤": r"$\leq$", "§": r"\S{}", "·": r"$\cdot$", "−": "--"}


def tex_escape(text: str) -> str:
    """Escape LaTeX specials (%, _, &, ...) and spell the few non-ASCII symbols the tables use."""
    out = "".join(_TEX_SPECIAL.get(ch, ch) for ch in text)
    for uni, tex in _TEX_UNICODE.items():
        out = out.replace(uni, tex)
    return out


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "experiment"


def spec_label(s: Any) -> str:
    target = f"/sp{s.target_sparsity:g}" if s.target_sparsity is not None else ""
    return f"{s.experiment}/{s.model_key}/{s.dataset_key}/{s.method}{target}/s{s.seed}"


# --------------------------------------------------------------------------- README.md


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
    prof = (manifest.profiles or {}).get(manifest.profile) or {}
    recipe = " ".join(str(prof.get("description") or "").split()) if isinstance(prof, dict) else ""
    if not recipe and manifest.profile == "full":
        recipe = ("the manifest's defaults: the paper's stated values, the released code's where the paper is "
                  "silent; every difference is listed under *Deviations*.")
    return [f"# {p.title}", "", "Reproduction report: " + " · ".join(refs) + ".", "",
            f"Profile `{manifest.profile}` of `{Path(manifest.path).name or p.key + '.yaml'}` "
            f"(manifest digest `{manifest.digest or 'n/a'}`)" + (f". Recipe: {recipe}" if recipe else "."), ""]


_LAYOUT_HELP = {
    "by_round": "*By round* tables: rows are (model, method); columns are pruning rounds, labelled by the mean "
                "fraction of prunable weights that remain (100% is the dense model).",
    "by_sparsity": "*By sparsity* tables: rows are (model, target sparsity); columns are the dense baseline and each "
                   "method's final values at that target; `sparsity` is the measured fraction of prunable weights that "
                   "are zero, `sparsity (all)` the same over all parameters (a range when the methods differ).",
    "paired": "*Paired* tables: rows are (model, base method, modified method); at each density (the target sparsity, "
              "or the pruning round labelled by remaining weights) the base method, the modified one and "
              "Δ = modified − base.",
}


_CLAIM_KIND_HELP = {
    "compare": "*compare*: each comparison of the claimed method `a` with a baseline `b` at the same cell is *ok* "
               "when a ≥ b − margin (≤ b + margin when lower is better); otherwise the shortfall gap = b − a − margin "
               "is *within noise* when gap ≤ k·se, se = sqrt(sd_a²/n_a + sd_b²/n_b) (k = 2 unless the claim sets it), "
               "and *failed* beyond that; with fewer than 2 seeds on either side, or noise rule `none`, any shortfall "
               "fails.",
    "reaches_dense": "*reaches dense*: the same comparison of `a` with the dense model (the dense method's cell, or "
                     "`a`'s own round 0), the claim's margin in points allowed.",
    "fails": "*fails*: `a` does not converge: held when at every cell every seed diverged or collapsed, or the rest "
             "end within the claim's margin (else the collapse band) of chance.",
    "correlation": "*correlation*: over a population (every seed's result rows, or every snapshot row), Pearson's "
                   "r or Spearman's ρ of two metrics must reach the claim's minimum: held when it does, within noise "
                   "when it does not but the 95% bootstrap interval (fixed seed) reaches it, failed otherwise.",
}


def how_to_read(manifest: Manifest, cells: list[Cell] = (), sections: Iterable[str] = ()) -> str:
    kinds = list(dict.fromkeys(e.layout.kind for e in manifest.experiments))
    claim_kinds = list(dict.fromkeys(c.kind for c in manifest.claims
                                     if c.experiment in {e.name for e in manifest.experiments}))
    sections = set(sections)
    bands = sorted({e.layout.collapse_points for e in manifest.experiments})
    band = " / ".join(f"{b:g}" for b in bands)
    excluded = (
        "`diverged (k/n)` means k of the cell's n planned seeds diverged (loss or weights became non-finite) "
        "before reaching it" + (" (listed under *Diverged runs*)" if "diverged" in sections else "") + "; "
        f"`collapsed (k/n)` means k seeds ended within {band} points of chance (1 / classes) while their dense "
        "model learned beyond that" + (" (listed under *Collapsed runs*)" if "collapsed" in sections else "")
        + ": such a cell is never shown as a number and never compared.")
    return "\n\n".join([
        "## How to read this",
        "Each table is one experiment of the paper, headed by the paper's table and the setup that actually ran "
        "(dataset, model and width, training length, seeds); `n` is the number of seeds with data (a range when it "
        "differs between columns). A cell is `mean ± std` over seeds (sample standard deviation; the mean alone "
        "when n = 1). — marks a value that does not exist (no run produced it, or the paper's number is not "
        "recorded). Accuracies are in percent, other metrics plain numbers. " + excluded + " Where the manifest "
        "records a published number it follows in parentheses, labelled `paper` (the paper's own tables) or "
        "`reference` (a number from released code, never mixed with the paper's), with Δ = ours − published in "
        "points, marked ✗ when outside the manifest's tolerance.",
        "\n".join(f"- {_LAYOUT_HELP[k]}" for k in kinds),
        "Claims are the paper's statements, checked where the manifest says (the experiment, the density window of "
        "remaining weights, the metric) on the setup named in *checked on*; the evidence ends with the cells it "
        "compared and the window. "
        + " ".join(_CLAIM_KIND_HELP[k] for k in claim_kinds) + " A claim *failed* if any comparison failed (the "
        "evidence names the cells, values ± sd, n and the threshold), is *within noise* if some fell short only "
        "within noise, *held* if every comparison was ok, and has *not enough data* when nothing could be compared. "
        "`results.csv` has every cell (every round, epoch and final row, every metric) with more digits; "
        "`tables.tex` has the same tables for LaTeX (booktabs).",
    ])


def _duration_text(spec: Any) -> str:
    t = spec.training
    if procedure(spec).axis == "round" and dense_spec(spec) is not None:
        return f"dense {t.pretrain}, then {t.retrain} per {procedure(spec).unit}"
    return f"{t.pretrain} of training"


def setup_text(specs: list[Any]) -> str:
    """What actually ran for one experiment: data, model and width, training length and batch, seeds."""
    if not specs:
        return "no runs"

    def uniq(items):
        return list(dict.fromkeys(items))

    def data_text(ds) -> str:
        sizes = [f"{ds.train_subset} train" if ds.train_subset else "", f"{ds.test_subset} test" if ds.test_subset else ""]
        sizes = " / ".join(x for x in sizes if x)
        return ds.source + (f" ({sizes} images)" if sizes else "")

    data = uniq(data_text(s.dataset) for s in specs)
    models = uniq(f"{s.model.arch}" + (f" at width {s.model.width:g}" if s.model.width != 1 else "") for s in specs)
    training = uniq(f"{_duration_text(s)} at batch {s.training.batch_size}" for s in specs)
    seeds = ", ".join(str(x) for x in sorted({s.seed for s in specs}))
    return f"{'; '.join(data)} · {'; '.join(models)} · {'; '.join(training)} · seeds {seeds}"


def readme(manifest: Manifest, specs: list[Any], cells: list[Cell], tables: list[Table], claims: list[ClaimResult],
           results: dict[str, RunResult], missing: list[Any], plots: dict[str, str]) -> str:
    lines = _paper_lines(manifest)
    short = sum(1 for c in cells if c.n + c.diverged < c.n_planned)
    if missing or short:
        lines += [f"> **Incomplete report**: {len(missing)} of {len(specs)} runs have no results and "
                  f"{short} of {len(cells)} cells have fewer seeds than planned. Run `prunebench run` with "
                  f"the same manifest and profile to finish the grid; cells marked — are not computed.", ""]
    diverged = sorted((s for s in specs if s.id in results and results[s.id].diverged), key=spec_label)
    collapsed = [c for c in cells if c.collapsed]
    sections = (["diverged"] if diverged else []) + (["collapsed"] if collapsed else [])
    lines += [how_to_read(manifest, cells, sections), ""]
    setups = {e.name: setup_text([s for s in specs if s.experiment == e.name]) for e in manifest.experiments}
    for t in tables:
        e = t.experiment
        lines += [f"## {e.title}", ""]
        if e.paper_title:
            lines += [f"Paper: {e.paper_title}.", ""]
        lines += [f"Ran: {setups[e.name]} (experiment `{e.name}`, datasets "
                  f"{', '.join(f'`{d}`' for d in e.datasets)}).", ""]
        if e.note:
            lines += [f"Note: {e.note}", ""]
        if t.note:
            lines += [t.note, ""]
        lines += md_table(t.header, t.rows, t.align, t.code) + [""]
        if e.name in plots:
            x = "sparsity" if e.layout.kind == "by_sparsity" else "remaining weights"
            lines += [f"![{e.name}: {e.layout.metric} against {x}]({plots[e.name]})", ""]
    lines += ["## Claims", ""]
    if claims:
        exp_of = {c.id: c.experiment for c in manifest.claims}
        rows = [[c.id, c.text, setups.get(exp_of.get(c.id), ""), f"**{c.outcome}**", c.evidence] for c in claims]
        lines += md_table(["id", "claim", "checked on", "outcome", "evidence"], rows, "lllll", [0]) + [""]
    else:
        lines += ["No claims for the experiments of this profile.", ""]
    dormant = dormant_claims(manifest)
    if dormant:
        lines += [f"Not evaluated (their experiments are not part of profile `{manifest.profile}`): "
                  + ", ".join(f"`{c.id}`" for c in dormant) + ".", ""]
    if diverged:
        lines += ["## Diverged runs", "", f"{len(diverged)} of {len(specs)} runs diverged (loss or weights became "
                  "non-finite); their cells from that point on read `diverged`:", ""]
        for s in diverged:
            step = results[s.id].diverged_step
            lines += [f"- `{spec_label(s)}` (`{s.id}`): diverged at step {step if step is not None else 'unknown'}"]
        lines += [""]
    if collapsed:
        lines += ["## Collapsed runs", "", f"{len(collapsed)} result cells have seeds that ended within the collapse "
                  "band of chance while their dense model learned; they read `collapsed (k/n)`:", ""]
        for c in collapsed[:_MAX_LISTED]:
            target = f"/sp{c.target_sparsity:g}" if c.target_sparsity is not None else ""
            where = f"{c.axis} {c.index}" if c.axis != "final" else "final"
            lines += [f"- `{c.experiment}/{c.model}/{c.dataset}/{c.method}{target}`, {where}: {c.collapsed} of "
                      f"{c.n_planned} seeds (chance {100 * (c.chance or 0):.1f}%)"]
        if len(collapsed) > _MAX_LISTED:
            lines += [f"- ... and {len(collapsed) - _MAX_LISTED} more"]
        lines += [""]
    lines += ["## Deviations from the paper and its code", ""]
    lines += [f"- **{d.name}**: {d.reason}" for d in manifest.deviations] or ["None recorded."]
    lines += [""]
    if missing:
        lines += ["## Missing runs", "", f"{len(missing)} of {len(specs)} runs have no results yet:", ""]
        for s in missing[:_MAX_LISTED]:
            r = results.get(s.id)
            lines += [f"- `{spec_label(s)}` (`{s.id}`)" + (f": unfinished (status {r.status})" if r else "")]
        if len(missing) > _MAX_LISTED:
            lines += [f"- ... and {len(missing) - _MAX_LISTED} more"]
        lines += [""]
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- tables.tex


def tex(manifest: Manifest, tables: list[Table]) -> str:
    out = [f"% {tex_escape(manifest.paper.title)}: profile {manifest.profile}, manifest digest {manifest.digest}",
           "% mean $\\pm$ std over seeds (accuracies in %); requires \\usepackage{booktabs}", ""]
    for t in tables:
        e = t.experiment
        out += [f"% experiment {e.name}", r"\begin{table}[t]", r"\centering", r"\small",
                f"\\begin{{tabular}}{{{t.align}}}", r"\toprule",
                " & ".join(tex_escape(h) for h in t.header) + r" \\", r"\midrule"]
        out += [" & ".join(tex_escape(v) for v in row) + r" \\" for row in t.rows]
        caption = e.title + (f" {t.note}" if t.note else "")
        out += [r"\bottomrule", r"\end{tabular}", f"\\caption{{{tex_escape(caption)}}}",
                f"\\label{{tab:{slug(e.name)}}}", r"\end{table}", ""]
    return "\n".join(out).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- results.csv


def _num(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _plain(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def csv_columns(cells: list[Cell]) -> list[str]:
    """Keys, then ``remaining`` (%), ``n``, ``diverged``, ``collapsed``, then mean and std of every metric (test_acc
    first, then by name), then the published numbers of each experiment's layout metric."""
    metrics = sorted({m for c in cells for m in c.metrics}, key=lambda m: (m != "test_acc", m))
    cols = [*KEY_COLUMNS, "remaining", "n", "diverged", "collapsed"]
    for m in metrics:
        cols += [f"{m}_mean", f"{m}_std"]
    for kind in ("paper", "reference"):
        cols += [f"{kind}_value", f"{kind}_tolerance", f"{kind}_diff"]
    return cols


def write_csv(manifest: Manifest, cells: list[Cell], path: Path) -> None:
    """One row per cell; percent metrics in %, 4 decimals (remaining: 6); others 6 significant; '' = none."""
    cols = csv_columns(cells)
    metric_of = {e.name: e.layout.metric for e in manifest.experiments}
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(cols)
        for c in cells:
            row = {"experiment": c.experiment, "dataset": c.dataset, "model": c.model, "method": c.method,
                   "target_sparsity": "" if c.target_sparsity is None else repr(float(c.target_sparsity)),
                   "axis": c.axis, "index": str(c.index),
                   "remaining": _num(None if c.density is None else c.density * 100, 6),
                   "n": str(c.n), "diverged": str(c.diverged), "collapsed": str(c.collapsed)}
            for m, s in c.metrics.items():
                text = _num if s.percent else _plain
                row[f"{m}_mean"], row[f"{m}_std"] = text(s.shown), text(s.shown_std)
            for kind in ("paper", "reference"):
                e, diff = published(manifest, c, kind, metric_of.get(c.experiment, "test_acc"))
                row[f"{kind}_value"] = _num(e.value) if e else ""
                row[f"{kind}_tolerance"] = _num(e.tolerance) if e else ""
                row[f"{kind}_diff"] = _num(diff)
            w.writerow([row.get(col, "") for col in cols])
