"""One PNG per experiment (matplotlib, Agg): a panel per (model, dataset).

* by_round / paired: ``layout.metric`` against remaining weights (log x, pruning goes right), a
  line per method;
* by_sparsity: against target sparsity, a line per method, when the experiment sweeps several
  sparsities (WRN-28-2); else a bar per method (the dense baseline first);
* paired (AP): a base method and its modified one share a colour (modified dashed), and each
  non-density column of the layout (the dead-neuron rate) gets its own panel against remaining weights;
* when ``graph_D`` is one of the layout's columns (PAGS), a second panel per (model, dataset):
  ``layout.metric`` against the mask-graph distance D, a point per (method, density) cell.

Diverged cells have no number and are not drawn.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from harness.report.cells import Cell, remaining_label, result_rows

if TYPE_CHECKING:
    from harness.config.schema import Experiment


def _points(cells: list[Cell], metric: str) -> list[Cell]:
    return [c for c in cells if not c.excluded and c.stat(metric).mean is not None]


def _pair_styles(e: Experiment) -> dict[str, dict]:
    """Paired layouts: a base method and its modified one share a colour, the modified one dashed."""
    out: dict[str, dict] = {}
    for i, (base, modified) in enumerate(e.layout.pairs or []):
        out[base] = {"color": f"C{i % 10}", "linestyle": "-"}
        out[modified] = {"color": f"C{i % 10}", "linestyle": "--"}
    return out


def _remaining_axes(ax, lines: dict[str, list[Cell]], metric: str, styles: dict[str, dict] | None = None) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator

    xs_all: set[float] = set()
    for label, pts in lines.items():
        pts = sorted(pts, key=lambda c: -c.density)
        xs = [c.density * 100 for c in pts]
        xs_all.update(round(x, 6) for x in xs)
        ax.errorbar(xs, [c.stat(metric).shown for c in pts], yerr=[c.stat(metric).shown_std or 0.0 for c in pts],
                    marker="o", markersize=3, capsize=2, linewidth=1.2, label=label, **(styles or {}).get(label, {}))
    ax.set_xscale("log")
    ticks = sorted(xs_all, reverse=True)
    if len(ticks) > 8:  # at most 8 labels, both ends included
        ticks = [ticks[round(i * (len(ticks) - 1) / 7)] for i in range(8)]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([remaining_label(t / 100) for t in ticks], rotation=45, fontsize=8)
    ax.set_xlim(max(xs_all) * 1.15, min(xs_all) / 1.15)
    ax.set_xlabel("remaining weights (%)")


def _sparsity_axes(ax, e: Experiment, cells: list[Cell], metric: str) -> None:
    final = _points([c for c in cells if c.axis == "final"], metric)
    dense = [c for c in final if c.method == e.layout.dense_method]
    if not dense:
        dense = _points([c for c in cells if c.axis == "round" and c.index == 0], metric)[:1]
    pruned = [c for c in final if c.method != e.layout.dense_method and c.target_sparsity is not None]
    methods = list(dict.fromkeys(c.method for c in pruned))
    if len({c.target_sparsity for c in pruned}) > 1:
        for m in methods:
            pts = sorted((c for c in pruned if c.method == m), key=lambda c: c.target_sparsity)
            ax.errorbar([c.target_sparsity * 100 for c in pts], [c.stat(metric).shown for c in pts],
                        yerr=[c.stat(metric).shown_std or 0.0 for c in pts], marker="o", markersize=3, capsize=2,
                        linewidth=1.2, label=m)
        if dense:
            ax.axhline(dense[0].stat(metric).shown, color="gray", linestyle="--", linewidth=1, label="dense")
        ax.set_xlabel("target sparsity (%)")
    else:
        bars = dense[:1] + [next(c for c in pruned if c.method == m) for m in methods]
        labels = ["dense"] * len(dense[:1]) + methods
        ax.bar(range(len(bars)), [c.stat(metric).shown for c in bars],
               yerr=[c.stat(metric).shown_std or 0.0 for c in bars], capsize=3, color="C0")
        ax.set_xticks(range(len(bars)))
        ax.set_xticklabels(labels, rotation=45, fontsize=8)
        lo = min(c.stat(metric).shown - (c.stat(metric).shown_std or 0.0) for c in bars)
        hi = max(c.stat(metric).shown + (c.stat(metric).shown_std or 0.0) for c in bars)
        pad = max(0.05 * (hi - lo), 0.5 if bars[0].stat(metric).percent else 1e-3)
        ax.set_ylim(lo - pad, hi + pad)
        if pruned:
            ax.set_xlabel(f"sparsity {pruned[0].target_sparsity * 100:g}%")


def _distance_axes(ax, cells: list[Cell], metric: str, percent: bool, title: str) -> None:
    pts = [c for c in _points(result_rows(cells), metric) if c.stat("graph_D").mean is not None]
    scale = 100 if percent else 1
    for method in dict.fromkeys(c.method for c in pts):
        mine = [c for c in pts if c.method == method]
        ax.errorbar([c.stat("graph_D").mean for c in mine], [c.stat(metric).mean * scale for c in mine],
                    yerr=[(c.stat(metric).std or 0.0) * scale for c in mine], fmt="o", markersize=4, capsize=2,
                    label=method)
    ax.set_title(f"{title}: against the graph distance D", fontsize=10)
    ax.set_xlabel("mask-graph distance D")
    ax.set_ylabel(metric + (" (%)" if percent else ""))
    ax.grid(True, alpha=0.3)
    if pts:
        ax.legend(fontsize=8)


def plot_experiment(e: Experiment, cells: list[Cell], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = e.layout.metric
    mine = [c for c in cells if c.experiment == e.name]
    panels = list(dict.fromkeys((c.model, c.dataset) for c in mine)) or [(m, d) for m in e.models for d in e.datasets]
    with_d = "graph_D" in e.layout.columns
    # paired layouts: the metric and every non-density column (AP: the dead-neuron rate) against remaining weights
    extra = [c for c in e.layout.columns if e.layout.kind == "paired" and not c.startswith("density") and c != "graph_D"]
    per = 1 + with_d + len(extra)
    ncols = min(len(panels), 3) * per
    nrows = -(-len(panels) * per // ncols)
    width = max(6.4, 4.8 * ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, 3.6 * nrows + 0.4), squeeze=False)
    for ax in axes.flat[len(panels) * per:]:
        ax.set_visible(False)
    percent = any(c.stat(metric).percent for c in mine)
    flat = list(axes.flat)
    for i, (model, ds) in enumerate(panels):
        ax = flat[i * per]
        here = [c for c in mine if c.model == model and c.dataset == ds]
        if with_d:
            _distance_axes(flat[i * per + 1], here, metric, percent, f"{model} · {ds}")
        ax.set_title(f"{model} · {ds}", fontsize=10)
        ax.set_ylabel(metric + (" (%)" if percent else ""))
        ax.grid(True, which="major", alpha=0.3)
        if e.layout.kind == "by_sparsity" and _points([c for c in here if c.axis == "final"], metric):
            _sparsity_axes(ax, e, here, metric)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
            continue
        lines: dict[str, list[Cell]] = {}
        for c in _points(result_rows(here), metric):
            if c.density:
                label = c.method if e.layout.kind == "paired" or c.target_sparsity is None \
                    else f"{c.method} (sparsity {c.target_sparsity:g})"
                lines.setdefault(label, []).append(c)
        if lines:
            styles = _pair_styles(e) if e.layout.kind == "paired" else None
            _remaining_axes(ax, lines, metric, styles)
            ax.legend(fontsize=8)
            for j, column in enumerate(extra, start=1):
                cax = flat[i * per + j]
                col_lines = {k: _points(v, column) for k, v in lines.items()}
                col_lines = {k: v for k, v in col_lines.items() if v}
                cax.set_title(f"{model} · {ds}: {column}", fontsize=10)
                cax.grid(True, which="major", alpha=0.3)
                if col_lines:
                    _remaining_axes(cax, col_lines, column, styles)
                    cax.set_ylabel(column + (" (%)" if any(c.stat(column).percent for v in col_lines.values()
                                                             for c in v) else ""))
                    cax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(textwrap.fill(e.title, width=int(width * 11)), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
