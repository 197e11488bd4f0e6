"""The paper's claims, judged on seed means against the seeds' own noise.

A claim looks at the result cells of its experiment (round rows, or the final row of runs trained to
a target) of method ``a`` whose mean density lies in ``[min_density, max_density]`` (the *window*),
for each listed model (or all). Cells with a diverged or collapsed seed (:mod:`.cells`) are never
compared; they are named in the evidence. Four kinds (``claim.kind``):

* ``compare``: ``a >= b`` (``<=`` when lower is better) on ``claim.metric`` against each ``b`` at the
  same cell. One comparison (display units: percent points for accuracies) is ``ok`` when
  ``a >= b - margin``; ``within noise`` when it falls short but ``gap = b - a - margin <= k * se``,
  ``se = sqrt(sd_a²/n_a + sd_b²/n_b)`` (noise rule ``stderr``); ``failed`` beyond that, or at any
  shortfall when either side has fewer than two seeds or the noise rule is ``none``.
* ``reaches_dense``: the same comparison of ``a`` with the dense model (``b``: the dense method's cell
  at the same model; none: ``a``'s own round 0), ``margin`` points allowed.
* ``fails``: ``a`` does not converge: a cell supports it when every seed diverged or collapsed, or the
  rest end within ``margin`` points of chance (``margin`` 0: the layout's collapse band).
* ``correlation``: one point per seed's result row in the window (``population: runs``) or per
  snapshot row (``population: snapshots``) of ``a`` and ``b``; the Pearson or Spearman coefficient of
  ``metric`` against ``against`` must reach ``min_r`` (``-min_r`` or below when lower is better). A
  bootstrap over the points (``bootstrap`` resamples, fixed seed) gives the 95 % interval: held when
  the coefficient reaches ``min_r``, within noise when it falls short but the interval reaches it,
  failed when the whole interval falls short.

A claim has failed if any comparison (cell) failed, is within noise if any was, held if at least one
was made, and has not enough data otherwise. Every evidence line ends with the scope: which cells
were compared and the density window.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.report.cells import EPS, Cell, decimals, index, remaining_label, result_rows
from harness.report.collect import RunResult, finite

if TYPE_CHECKING:
    from harness.config.schema import Claim, Manifest, NoiseRule

OK, HELD, WITHIN_NOISE, FAILED, NOT_ENOUGH_DATA = "ok", "held", "within noise", "failed", "not enough data"


@dataclass(frozen=True)
class ClaimResult:
    id: str
    text: str
    outcome: str  # HELD, WITHIN_NOISE, FAILED or NOT_ENOUGH_DATA
    evidence: str


@dataclass(frozen=True)
class Verdict:
    """One comparison: its outcome, the shortfall beyond the margin and the noise threshold."""

    outcome: str  # OK, WITHIN_NOISE or FAILED
    gap: float  # b - a - margin (a - b - margin when lower is better); > 0 means a falls short
    threshold: float | None  # k * se; None when the plain comparison decided


def judge(va: float, sa: float | None, na: int, vb: float, sb: float | None, nb: int, margin: float = 0.0,
          higher_is_better: bool = True, noise: NoiseRule | None = None) -> Verdict:
    """One comparison of ``a`` (mean va, sample std sa over na seeds) against ``b``; ``noise``
    None is the schema's default rule (stderr, k = 2)."""
    rule, k = (noise.rule, noise.k) if noise is not None else ("stderr", 2.0)
    if higher_is_better:
        short, gap = va < vb - margin, vb - va - margin
    else:
        short, gap = va > vb + margin, va - vb - margin
    if not short:
        return Verdict(OK, gap, None)
    if rule == "none" or na < 2 or nb < 2 or sa is None or sb is None:
        return Verdict(FAILED, gap, None)
    threshold = k * math.sqrt(sa ** 2 / na + sb ** 2 / nb)
    return Verdict(WITHIN_NOISE if gap <= threshold else FAILED, gap, threshold)


# --------------------------------------------------------------------------- correlation


def _ranks(xs: list[float]) -> list[float]:
    """Average ranks (1-based), ties sharing the mean of their positions."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    out = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for t in range(i, j + 1):
            out[order[t]] = (i + j) / 2 + 1
        i = j + 1
    return out


def pearson(xs: list[float], ys: list[float]) -> float | None:
    """Pearson's r; None when either side has no spread (or fewer than 2 points)."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = math.fsum(xs) / n, math.fsum(ys) / n
    sxy = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    syy = math.fsum((y - my) ** 2 for y in ys)
    if sxx <= 0 or syy <= 0:
        return None
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def spearman(xs: list[float], ys: list[float]) -> float | None:
    return pearson(_ranks(xs), _ranks(ys))


STATISTICS = {"pearson": pearson, "spearman": spearman}


def bootstrap_interval(xs: list[float], ys: list[float], statistic: str, resamples: int,
                       seed: int = 0) -> tuple[float, float] | None:
    """The 2.5 % and 97.5 % percentiles of the statistic over ``resamples`` resamples of the points (fixed
    seed: the same data always gives the same interval); resamples without spread are skipped."""
    fn = STATISTICS[statistic]
    rng = random.Random(seed)
    n = len(xs)
    values = []
    for _ in range(resamples):
        pick = [rng.randrange(n) for _ in range(n)]
        r = fn([xs[i] for i in pick], [ys[i] for i in pick])
        if r is not None:
            values.append(r)
    if len(values) < resamples // 2:
        return None
    values.sort()

    def q(p: float) -> float:
        pos = p * (len(values) - 1)
        lo = math.floor(pos)
        return values[lo] + (values[min(lo + 1, len(values) - 1)] - values[lo]) * (pos - lo)

    return q(0.025), q(0.975)


# --------------------------------------------------------------------------- text helpers


def _pct(density: float) -> str:
    return f"{density * 100:g}%"


def _where(c: Cell, multi_ds: bool) -> str:
    text = c.model + (f" on {c.dataset}" if multi_ds else "")
    if c.target_sparsity is not None:
        text += f" (sparsity {c.target_sparsity:g})"
    text += f", round {c.index}" if c.axis == "round" else f", {c.axis}" + (f" {c.index}" if c.axis != "final" else "")
    return text + (f" ({remaining_label(c.density)} remaining)" if c.density is not None else "")


def _value(c: Cell, metric: str) -> str:
    s = c.stat(metric)
    d = decimals(s.shown, s.percent)
    return f"{s.shown:.{d}f}" + ("" if s.std is None else f" ± {s.shown_std:.{d}f}") + f" (n={s.n})"


def _num(v: float, percent: bool) -> str:
    return f"{v:.{decimals(v, percent) + 1}f}"


def _excluded(c: Cell) -> str:
    parts = [f"{w} {k}/{c.n_planned}" for w, k in (("diverged", c.diverged), ("collapsed", c.collapsed)) if k]
    return ", ".join(parts)


def _span(claim: Claim) -> str:
    """'remaining weights <= 5%' (the window on ``density``), or the window on another density metric."""
    lo, hi = claim.min_density, claim.max_density
    what = "remaining weights" if claim.window == "density" else claim.window
    return f"{what} " + (f"<= {_pct(hi)}" if lo <= 0 else f"in [{_pct(lo)}, {_pct(hi)}]")


def _scope(claim: Claim, cells: list[Cell], multi_ds: bool, what: str) -> str:
    """'compared: lamp vs global at resnet20 round 15 (3.52%), ...; window: remaining weights <= 5%'."""
    by_where: dict[str, list[str]] = {}
    for c in {c.key: c for c in cells}.values():
        head = c.model + (f" on {c.dataset}" if multi_ds else "")
        label = (remaining_label(c.density) if c.density is not None else
                 (f"round {c.index}" if c.axis == "round" else c.axis))
        if c.target_sparsity is not None:
            label = f"sparsity {c.target_sparsity:g} ({label})"
        by_where.setdefault(head, []).append(label)
    listed = "; ".join(f"{h} at {', '.join(v)}" for h, v in by_where.items()) or "no cell"
    return f"[{what}: {listed}; window: {_span(claim)}]"


# --------------------------------------------------------------------------- the kinds


@dataclass
class _Ctx:
    claim: Claim
    cells: list[Cell]  # the result cells of the claim's experiment
    idx: dict[tuple, Cell]
    multi_ds: bool
    models: list[str]
    band: float  # the collapse band of the experiment's layout, in points
    results: Mapping[str, RunResult] | None
    specs: list[Any] | None

    def density(self, c: Cell | None) -> float | None:
        return None if c is None else c.stat(self.claim.window).mean

    def in_window(self, c: Cell, other: Cell | None = None) -> bool:
        d = self.density(c) if self.density(c) is not None else self.density(other)
        if d is None and c.target_sparsity is not None and self.claim.window == "density":
            d = 1.0 - c.target_sparsity  # every seed diverged: the target says where it was
        return d is not None and self.claim.min_density - EPS <= d <= self.claim.max_density + EPS

    def a_cells(self) -> list[Cell]:
        return [c for c in self.cells if c.method == self.claim.a and c.model in self.models]


def _comparisons(ctx: _Ctx, pairs: list[tuple[Cell, Cell | None, str]], label: str,
                 short: str | None = None) -> ClaimResult:
    """Judge (a, b) cell pairs; ``label`` names the b side (the baselines, or 'dense'), ``short`` too where one
    comparison fell short (default: ``label``)."""
    short = short or label
    claim, m = ctx.claim, ctx.claim.metric
    better, worse, side = (">=", "<", "below") if claim.higher_is_better else ("<=", ">", "above")
    done: list[tuple[Cell, Cell, Verdict]] = []
    skipped: list[str] = []
    for a, b, b_name in pairs:
        if b is None or not ctx.in_window(a, b):
            continue
        if a.excluded or b.excluded:
            who = "; ".join(f"{x.method} {_excluded(x)}" for x in (a, b) if x.excluded)
            skipped.append(f"{_where(a, ctx.multi_ds)} vs {b_name} ({who})")
            continue
        sa, sb = a.stat(m), b.stat(m)
        if sa.mean is None or sb.mean is None:
            continue
        done.append((a, b, judge(sa.shown, sa.shown_std, sa.n, sb.shown, sb.shown_std, sb.n, claim.margin,
                                 claim.higher_is_better, claim.noise)))
    margin = f", margin {claim.margin:g}" if claim.margin else ""
    rule = "noise: plain comparison" if claim.noise.rule == "none" else f"noise: {claim.noise.k:g}·se"
    note = ""
    if skipped:
        note = (f"; not compared ({len(skipped)} with diverged or collapsed seeds): "
                f"{'; '.join(skipped[:3])}{'; ...' if len(skipped) > 3 else ''}")
    scope = " " + _scope(claim, [a for a, _, _ in done], ctx.multi_ds, f"compared {claim.a} with {label}")
    failed = [x for x in done if x[2].outcome == FAILED]
    noisy = [x for x in done if x[2].outcome == WITHIN_NOISE]

    def line(a: Cell, b: Cell, v: Verdict, op: str) -> str:
        pct = a.stat(m).percent
        thr = (f"{claim.noise.k:g}·se = {_num(v.threshold, pct)}" if v.threshold is not None
               else "0 (plain comparison: " + ("noise rule none" if claim.noise.rule == "none"
                                               else "fewer than 2 seeds") + ")")
        name = b.method if label != "dense" else f"dense ({b.method}{', round 0' if b.axis == 'round' else ''})"
        return (f"{_where(a, ctx.multi_ds)}: {claim.a} {_value(a, m)} {worse} {name} {_value(b, m)}, "
                f"gap {_num(v.gap, pct)} {op} {thr}")

    if failed:
        shown = "; ".join(line(*x, ">") for x in failed[:3])
        shown += f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
        return ClaimResult(claim.id, claim.text, FAILED,
                           f"{claim.a} {side} {short} beyond noise in {len(failed)} of {len(done)} comparisons "
                           f"({m}{margin}; {rule}): {shown}{note}{scope}")
    if noisy:
        worst = max(noisy, key=lambda x: x[2].gap)
        return ClaimResult(claim.id, claim.text, WITHIN_NOISE,
                           f"{claim.a} {side} {short} within noise in {len(noisy)} of {len(done)} comparisons "
                           f"({m}{margin}; {rule}); largest gap: {line(*worst, '<=')}{note}{scope}")
    if done:
        n = len({(a.dataset, a.model, a.target_sparsity, a.axis, a.index) for a, _, _ in done})
        extra = f" ({len(done)} comparisons{margin})" if len(done) != n or margin else ""
        absent = [x for x in ctx.models if not any(a.model == x for a, _, _ in done)]
        absent_note = f"; not compared: {', '.join(absent)} (no data)" if absent else ""
        return ClaimResult(claim.id, claim.text, HELD,
                           f"{claim.a} {better} {label} on {m} at all {n} compared cell{'s' if n != 1 else ''}"
                           f"{extra}{absent_note}{note}{scope}")
    return ClaimResult(claim.id, claim.text, NOT_ENOUGH_DATA, _why_not(ctx, label, skipped))


def _why_not(ctx: _Ctx, label: str, skipped: list[str]) -> str:
    claim = ctx.claim
    if skipped:
        return (f"every comparable cell has diverged or collapsed seeds ({'; '.join(skipped[:3])}"
                f"{'; ...' if len(skipped) > 3 else ''}); window: {_span(claim)}")
    have = [c for c in ctx.a_cells() if c.stat(claim.metric).mean is not None or c.excluded]
    dens = [ctx.density(c) for c in have if ctx.density(c) is not None]
    if not have:
        return f"no data for {claim.a}" + (f" on {', '.join(ctx.models)}" if claim.models else "")
    if not any(ctx.in_window(c) for c in have):
        lowest = f" (lowest recorded: {remaining_label(min(dens))})" if dens else ""
        return f"no cell with {_span(claim)}{lowest}"
    return f"no data for {label} at the {claim.a} cells with {_span(claim)}"


def _compare(ctx: _Ctx) -> ClaimResult:
    pairs = [(a, ctx.idx.get((a.experiment, a.dataset, a.model, b, a.target_sparsity, a.axis, a.index)), b)
             for a in ctx.a_cells() for b in ctx.claim.b]
    return _comparisons(ctx, pairs, ", ".join(ctx.claim.b), "a baseline")


def _dense_cell(ctx: _Ctx, a: Cell) -> Cell | None:
    for b in ctx.claim.b:
        for t in (a.target_sparsity, None):
            found = ctx.idx.get((a.experiment, a.dataset, a.model, b, t, "final", 0))
            if found is not None:
                return found
    if not ctx.claim.b:
        return ctx.idx.get((a.experiment, a.dataset, a.model, a.method, a.target_sparsity, "round", 0))
    return None


def _reaches_dense(ctx: _Ctx) -> ClaimResult:
    pairs = [(a, _dense_cell(ctx, a), "dense") for a in ctx.a_cells()
             if not (a.axis == "round" and a.index == 0)]
    return _comparisons(ctx, pairs, "dense")


def _fails(ctx: _Ctx) -> ClaimResult:
    claim = ctx.claim
    points = claim.margin or ctx.band
    converged, failing = [], []
    for a in ctx.a_cells():
        if not ctx.in_window(a) or (a.axis == "round" and a.index == 0):
            continue
        acc = a.stat("test_acc")
        rest = acc.mean is not None and a.n > 0
        if (a.diverged or a.collapsed) and not rest:
            failing.append((a, _excluded(a)))
        elif rest and a.chance is not None and acc.mean <= a.chance + points / 100.0 + EPS:
            failing.append((a, (_excluded(a) + "; " if a.excluded else "") + f"test_acc {_value(a, 'test_acc')}, "
                            f"chance {a.chance * 100:.1f}"))
        elif rest:
            converged.append(a)
    scope = " " + _scope(claim, [c for c, _ in failing] + converged, ctx.multi_ds,
                         f"cells of {claim.a}; chance band {points:g} points")
    if converged:
        shown = "; ".join(f"{_where(a, ctx.multi_ds)}: {a.n} of {a.n_planned} seeds converged, test_acc "
                          f"{_value(a, 'test_acc')}" for a in converged[:3])
        return ClaimResult(claim.id, claim.text, FAILED,
                           f"{claim.a} converged beyond {points:g} points above chance in {len(converged)} of "
                           f"{len(converged) + len(failing)} cells: {shown}{scope}")
    if failing:
        shown = "; ".join(f"{_where(a, ctx.multi_ds)}: {why}" for a, why in failing[:3])
        return ClaimResult(claim.id, claim.text, HELD,
                           f"{claim.a} did not converge at all {len(failing)} cells (every seed diverged, collapsed "
                           f"or within {points:g} points of chance): {shown}{scope}")
    return ClaimResult(claim.id, claim.text, NOT_ENOUGH_DATA, _why_not(ctx, "chance", []))


def _points(ctx: _Ctx) -> tuple[list[float], list[float], list[str]]:
    """The correlation's population: (metric values, against values, what each point is)."""
    claim = ctx.claim
    xs, ys, what = [], [], []
    methods = {claim.a, *claim.b}
    for s in ctx.specs or []:
        r = (ctx.results or {}).get(s.id)
        if (s.experiment != claim.experiment or s.method not in methods or s.model_key not in ctx.models
                or r is None or r.diverged):
            continue
        if claim.population == "snapshots":
            rows = [(f"step {i}", row) for i, row in sorted(r.rows.get("snapshot", {}).items())]
        else:
            final = r.row("final", 0)
            rows = ([(f"round {i}", row) for i, row in sorted(r.rows.get("round", {}).items()) if i > 0]
                    if s.target_sparsity is None and r.rows.get("round") else [("final", final)] if final else [])
        for label, row in rows:
            d = finite([row.get(claim.window)])
            if d and not claim.min_density - EPS <= d[0] <= claim.max_density + EPS:
                continue
            x, y = finite([row.get(claim.metric)]), finite([row.get(claim.against)])
            if x and y:
                xs.append(x[0])
                ys.append(y[0])
                what.append(f"{s.method}/s{s.seed}/{label}")
    return xs, ys, what


def _correlation(ctx: _Ctx) -> ClaimResult:
    claim = ctx.claim
    xs, ys, what = _points(ctx)
    methods = ", ".join([claim.a, *claim.b])
    models = ", ".join(ctx.models)
    scope = (f" [population: {len(xs)} {'snapshot rows' if claim.population == 'snapshots' else 'result rows'} of "
             f"{methods} on {models}, every seed; window: {_span(claim)}]")
    r = STATISTICS[claim.statistic](xs, ys) if len(xs) >= 3 else None
    if r is None:
        why = (f"{len(xs)} points with both {claim.metric} and {claim.against}" if len(xs) < 3
               else f"no spread in {claim.metric} or {claim.against}")
        return ClaimResult(claim.id, claim.text, NOT_ENOUGH_DATA, f"{why}{scope}")
    ci = bootstrap_interval(xs, ys, claim.statistic, claim.bootstrap)
    sign = 1.0 if claim.higher_is_better else -1.0
    target = sign * claim.min_r
    name = {"pearson": "Pearson r", "spearman": "Spearman ρ"}[claim.statistic]
    ci_text = "no interval (resamples without spread)" if ci is None else f"95% bootstrap interval [{ci[0]:.3f}, {ci[1]:.3f}]"
    text = (f"{name}({claim.metric}, {claim.against}) = {r:.3f} over {len(xs)} points, {ci_text}, "
            f"{'required >=' if sign > 0 else 'required <='} {target:g}{scope}")
    meets = (r >= target) if sign > 0 else (r <= target)
    if meets:
        return ClaimResult(claim.id, claim.text, HELD, text)
    reach = ci is not None and ((ci[1] >= target) if sign > 0 else (ci[0] <= target))
    return ClaimResult(claim.id, claim.text, WITHIN_NOISE if reach else FAILED, text)


KINDS = {"compare": _compare, "reaches_dense": _reaches_dense, "fails": _fails, "correlation": _correlation}


def evaluate_claims(manifest: Manifest, cells: Iterable[Cell], results: Mapping[str, RunResult] | None = None,
                    specs: Iterable[Any] | None = None) -> list[ClaimResult]:
    """Every claim whose experiment is part of the manifest (profile), in manifest order. ``results`` and
    ``specs`` give correlation claims their per-seed points."""
    cells = list(cells)
    specs = list(specs) if specs is not None else None
    exps = {e.name: e for e in manifest.experiments}
    out = []
    for claim in manifest.claims:
        e = exps.get(claim.experiment)
        if e is None:
            continue
        mine = result_rows([c for c in cells if c.experiment == claim.experiment])
        models = list(claim.models) or list(dict.fromkeys(c.model for c in mine)) or list(e.models)
        ctx = _Ctx(claim, mine, index(mine), len(e.datasets) > 1, models, e.layout.collapse_points, results, specs)
        out.append(KINDS[claim.kind](ctx))
    return out


def dormant_claims(manifest: Manifest) -> list[Claim]:
    """Claims about experiments that are not part of this manifest's profile."""
    names = {e.name for e in manifest.experiments}
    return [c for c in manifest.claims if c.experiment not in names]
