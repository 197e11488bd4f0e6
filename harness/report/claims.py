"""The paper's claims, judged on seed means against the seeds' own noise.

For a claim ``a >= b`` (``<=`` when lower is better) on ``claim.metric``, ``a`` is compared with
each ``b`` at every result cell of the claim's experiment (round rows, or the final row of runs
without rounds) whose mean density of ``a`` lies in ``[min_density, max_density]``. One
comparison (values in display units: percent points for accuracies) is

* ``ok`` when ``a >= b - margin``;
* ``within noise`` when it falls short but ``gap = b - a - margin <= k * se``, with
  ``se = sqrt(sd_a²/n_a + sd_b²/n_b)`` (noise rule ``stderr``);
* ``failed`` beyond that, or at any shortfall when either side has fewer than two seeds or the
  noise rule is ``none`` (no spread to judge by: the plain comparison decides).

A claim has failed if any comparison failed, is within noise if any was, held if at least one
comparison was made, and has not enough data otherwise. Cells with diverged seeds are not judged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.report.cells import EPS, Cell, decimals, index, remaining_label, result_rows

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


def _evaluate(claim: Claim, cells: list[Cell], multi_ds: bool) -> ClaimResult:
    m = claim.metric
    mine = result_rows([c for c in cells if c.experiment == claim.experiment])
    idx = index(mine)
    models = list(claim.models) or list(dict.fromkeys(c.model for c in mine))
    baselines = ", ".join(claim.b)
    better, worse, side = (">=", "<", "below") if claim.higher_is_better else ("<=", ">", "above")
    lo, hi = claim.min_density, claim.max_density
    in_range = (lambda d: d is not None and lo - EPS <= d <= hi + EPS)
    span = f"<= {_pct(hi)}" if lo <= 0 else f"in [{_pct(lo)}, {_pct(hi)}]"
    done: list[tuple[Cell, Cell, Verdict]] = []
    skipped: list[str] = []
    a_cells = [c for c in mine if c.method == claim.a and c.model in models]
    for a in a_cells:
        for b_method in claim.b:
            b = idx.get((a.experiment, a.dataset, a.model, b_method, a.target_sparsity, a.axis, a.index))
            if b is None or not in_range(a.density if a.density is not None else b.density):
                continue
            if a.diverged or b.diverged:
                skipped.append(f"{_where(a, multi_ds)} vs {b_method}")
                continue
            sa, sb = a.stat(m), b.stat(m)
            if sa.mean is None or sb.mean is None:
                continue
            done.append((a, b, judge(sa.shown, sa.shown_std, sa.n, sb.shown, sb.shown_std, sb.n, claim.margin,
                                     claim.higher_is_better, claim.noise)))
    margin = f", margin {claim.margin:g}" if claim.margin else ""
    rule = ("noise: plain comparison" if claim.noise.rule == "none"
            else f"noise: {claim.noise.k:g}·se")
    skipped_text = (f"{len(skipped)} comparison{'s' if len(skipped) != 1 else ''} with diverged seeds "
                    f"({'; '.join(skipped[:3])}{'; ...' if len(skipped) > 3 else ''})")
    note = f"; not judged: {skipped_text}" if skipped else ""
    failed = [x for x in done if x[2].outcome == FAILED]
    noisy = [x for x in done if x[2].outcome == WITHIN_NOISE]

    def line(a: Cell, b: Cell, v: Verdict, op: str) -> str:
        pct = a.stat(m).percent
        thr = (f"{claim.noise.k:g}·se = {_num(v.threshold, pct)}" if v.threshold is not None
               else "0 (plain comparison: " + ("noise rule none" if claim.noise.rule == "none"
                                               else "fewer than 2 seeds") + ")")
        return (f"{_where(a, multi_ds)}: {claim.a} {_value(a, m)} {worse} {b.method} {_value(b, m)}, "
                f"gap {_num(v.gap, pct)} {op} {thr}")

    if failed:
        shown = "; ".join(line(*x, ">") for x in failed[:3])
        shown += f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
        return ClaimResult(claim.id, claim.text, FAILED,
                           f"{claim.a} {side} a baseline beyond noise in {len(failed)} of {len(done)} comparisons "
                           f"({m}{margin}; {rule}): {shown}{note}")
    if noisy:
        worst = max(noisy, key=lambda x: x[2].gap)
        return ClaimResult(claim.id, claim.text, WITHIN_NOISE,
                           f"{claim.a} {side} a baseline within noise in {len(noisy)} of {len(done)} comparisons "
                           f"({m}{margin}; {rule}); largest gap: {line(*worst, '<=')}{note}")
    if done:
        n = len({(a.dataset, a.model, a.target_sparsity, a.axis, a.index) for a, _, _ in done})
        extra = f" ({len(done)} comparisons{margin})" if len(done) != n or margin else ""
        absent = [x for x in models if not any(a.model == x for a, _, _ in done)]
        absent_note = f"; not compared: {', '.join(absent)} (no data)" if absent else ""
        return ClaimResult(claim.id, claim.text, HELD,
                           f"{claim.a} {better} {baselines} on {m} at all {n} compared cell{'s' if n != 1 else ''}"
                           f"{extra}{absent_note}{note}")
    if skipped:
        why = f"every comparable cell has diverged seeds: {skipped_text}"
    else:
        have = [c for c in a_cells if c.stat(m).mean is not None]
        dens = [c.density for c in have if c.density is not None]
        if not have:
            why = f"no data for {claim.a}" + (f" on {', '.join(models)}" if claim.models else "")
        elif not any(in_range(d) for d in dens):
            lowest = f" (lowest recorded: {remaining_label(min(dens))})" if dens else ""
            why = f"no cell with remaining weights {span}{lowest}"
        else:
            why = f"no data for {baselines} at the {claim.a} cells with remaining weights {span}"
    return ClaimResult(claim.id, claim.text, NOT_ENOUGH_DATA, why)


def evaluate_claims(manifest: Manifest, cells: Iterable[Cell]) -> list[ClaimResult]:
    """Every claim whose experiment is part of the manifest (profile), in manifest order."""
    cells = list(cells)
    exps = {e.name: e for e in manifest.experiments}
    return [_evaluate(c, cells, len(exps[c.experiment].datasets) > 1) for c in manifest.claims if c.experiment in exps]


def dormant_claims(manifest: Manifest) -> list[Claim]:
    """Claims about experiments that are not part of this manifest's profile."""
    names = {e.name for e in manifest.experiments}
    return [c for c in manifest.claims if c.experiment not in names]
