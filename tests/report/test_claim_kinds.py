"""Collapsed seeds and the claim kinds beyond ``compare`` (fails, reaches_dense, correlation), on
hand-made cells: each rule at its boundary."""

from __future__ import annotations

import math

import pytest

from harness import report
from harness.config.schema import Claim, Layout
from harness.report import FAILED, HELD, NOT_ENOUGH_DATA, WITHIN_NOISE
from harness.report.claims import bootstrap_interval, pearson, spearman
from tests.report.fakes import FINAL, experiment, final_run, manifest, round_run, run, specs_for

pytestmark = pytest.mark.usefixtures("fake_procedure")

# --------------------------------------------------------------------------- collapsed seeds


def _rounds(accs: dict[str, list[list[float]]], classes: int = 10, points: float = 5.0, claims=()):
    e = experiment(methods=tuple(accs), layout=Layout(collapse_points=points))
    m = manifest(e, claims=list(claims))
    specs = specs_for(e, (), num_classes=classes)
    res = {s.id: round_run(accs[s.method][s.seed]) for s in specs}
    return m, specs, res, report.aggregate(m, specs, res)


def test_a_seed_at_chance_whose_dense_model_learned_is_collapsed_at_the_band_edge():
    # chance 10 %, band 5 points: 15.0 % is collapsed (<=), 15.01 % is not; round 0 (dense) never is
    m, specs, res, cells = _rounds({"lamp": [[0.80, 0.70, 0.15], [0.80, 0.70, 0.1501]]})
    at = {(c.axis, c.index): c for c in cells}
    assert at[("round", 2)].collapsed == 1 and at[("round", 2)].n == 1
    assert at[("round", 2)].stat("test_acc").mean == pytest.approx(0.1501)  # the collapsed seed is not averaged
    assert at[("final", 0)].collapsed == 1
    assert at[("round", 0)].collapsed == 0 and at[("round", 1)].collapsed == 0
    (t,) = report.tables(m, cells)
    assert t.rows[0][-1] == "collapsed (1/2)"


def test_no_collapse_when_the_dense_model_did_not_learn_or_chance_is_unknown():
    m, specs, res, cells = _rounds({"lamp": [[0.14, 0.12, 0.11], [0.14, 0.12, 0.11]]})
    assert all(c.collapsed == 0 for c in cells)  # 14 % dense: never learned beyond the band
    _, _, _, cells = _rounds({"lamp": [[0.80, 0.12, 0.11], [0.80, 0.12, 0.11]]}, classes=0)
    assert all(c.collapsed == 0 for c in cells)


def test_collapsed_cells_are_not_compared_and_are_named():
    claim = Claim(id="c", text="lamp beats global", experiment="main", a="lamp", b=("global",))
    m, specs, res, cells = _rounds({"lamp": [[0.8, 0.11], [0.8, 0.7]], "global": [[0.8, 0.75], [0.8, 0.74]]},
                                   claims=[claim])
    (r,) = report.evaluate_claims(m, cells)
    # round 1 has a collapsed lamp seed: only round 0 (dense, a tie) is compared
    assert r.outcome == HELD
    assert "not compared (1 with diverged or collapsed seeds): vgg16, round 1 (80.0% remaining) vs global " \
           "(lamp collapsed 1/2)" in r.evidence


def test_dense_reference_from_the_layout_dense_method_or_the_best_epoch():
    e = experiment(methods=("dense", "dsr"), layout=Layout(kind="by_sparsity", dense_method="dense"), seeds=(0,))
    m = manifest(e)
    specs = specs_for(e, FINAL, targets=(None,), num_classes=10)
    dsr = next(s for s in specs if s.method == "dsr")
    dense = next(s for s in specs if s.method == "dense")
    res = {dense.id: final_run(0.80, 1.0), dsr.id: final_run(0.12, 0.01)}
    (c,) = [c for c in report.aggregate(m, specs, res) if c.method == "dsr"]
    assert c.collapsed == 1
    # no dense run: its own best epoch decides (learned to 40 % then fell to 11 %)
    res = {dsr.id: run({"epoch": {1: {"test_acc": 0.40}, 2: {"test_acc": 0.11}},
                        "final": {0: {"test_acc": 0.11, "density": 0.01}}})}
    (c,) = [c for c in report.aggregate(m, specs, res) if c.method == "dsr" and c.axis == "final"]
    assert c.collapsed == 1


# --------------------------------------------------------------------------- fails


def _finals(accs: dict[str, list[float | None]], claim: Claim, classes: int = 10):
    e = experiment(methods=tuple(accs), seeds=tuple(range(len(next(iter(accs.values()))))),
                   layout=Layout(kind="by_sparsity", dense_method="dense"))
    m = manifest(e, claims=[claim])
    specs = specs_for(e, FINAL, targets=(0.99,), num_classes=classes)
    res = {}
    for s in specs:
        a = accs[s.method][s.seed]
        res[s.id] = run(diverged=True, step=3) if a is None else final_run(a, 0.01)
    (r,) = report.evaluate_claims(m, report.aggregate(m, specs, res))
    return r


FAILS = Claim(id="dsr_fails", text="DSR cannot converge at 99%", experiment="main", a="dsr", kind="fails",
              max_density=0.011)


def test_fails_holds_when_every_seed_diverged_or_sits_at_chance():
    r = _finals({"dense": [0.8, 0.8, 0.8], "dsr": [None, 0.11, 0.10]}, FAILS)
    assert r.outcome == HELD and "did not converge at all 1 cells" in r.evidence
    assert "window: remaining weights <= 1.1%" in r.evidence


def test_fails_fails_when_a_seed_converged_and_respects_the_margin():
    r = _finals({"dense": [0.8, 0.8, 0.8], "dsr": [0.60, 0.62, 0.61]}, FAILS)
    assert r.outcome == FAILED and "3 of 3 seeds converged" in r.evidence
    # band 5 points (the layout's): 15.0 % sits in it, 15.1 % does not (no dense: the mean decides)
    r = _finals({"dsr": [0.15, 0.15]}, FAILS)
    assert r.outcome == HELD
    r = _finals({"dsr": [0.151, 0.151]}, FAILS)
    assert r.outcome == FAILED
    # the claim's own margin replaces the band
    r = _finals({"dsr": [0.151, 0.151]}, Claim(**{**FAILS.__dict__, "margin": 6.0}))
    assert r.outcome == HELD


def test_fails_without_cells_in_the_window_is_not_enough_data():
    r = _finals({"dsr": [0.5, 0.5]}, Claim(**{**FAILS.__dict__, "max_density": 0.001}))
    assert r.outcome == NOT_ENOUGH_DATA


# --------------------------------------------------------------------------- reaches dense


def test_reaches_dense_against_the_dense_method_with_margin_and_noise():
    claim = Claim(id="dense", text="DPF reaches dense", experiment="main", a="dpf", b=("dense",),
                  kind="reaches_dense", margin=1.0)
    ok = _finals({"dense": [0.80, 0.81, 0.79], "dpf": [0.795, 0.805, 0.785]}, claim)  # 79.5 vs 80.0, margin 1
    assert ok.outcome == HELD and "dpf >= dense on test_acc at all 1 compared cell" in ok.evidence
    far = _finals({"dense": [0.80, 0.81, 0.79], "dpf": [0.70, 0.71, 0.69]}, claim)
    assert far.outcome == FAILED and "dense (dense)" in far.evidence


def test_reaches_dense_against_round_zero():
    claim = Claim(id="dense", text="LAMP keeps dense accuracy", experiment="main", a="lamp", kind="reaches_dense",
                  min_density=0.7)
    m, specs, res, cells = _rounds({"lamp": [[0.80, 0.80, 0.70], [0.80, 0.81, 0.69]]}, claims=[claim])
    (r,) = report.evaluate_claims(m, cells, res, specs)
    assert r.outcome == HELD and "[compared lamp with dense: vgg16 at 80.0%;" in r.evidence  # round 1 vs round 0
    claim = Claim(**{**claim.__dict__, "min_density": 0.0})
    m, specs, res, cells = _rounds({"lamp": [[0.80, 0.80, 0.50], [0.80, 0.81, 0.51]]}, claims=[claim])
    (r,) = report.evaluate_claims(m, cells, res, specs)
    assert r.outcome == FAILED


# --------------------------------------------------------------------------- correlation


def test_pearson_and_spearman_by_hand():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # x = 1..4, y = 1, 3, 2, 4: sxy = 4, sxx = syy = 5 -> 0.8
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert pearson([1, 1, 1], [1, 2, 3]) is None
    # Spearman with a tie: ranks of (10, 20, 20, 30) are 1, 2.5, 2.5, 4
    assert spearman([10, 20, 20, 30], [1, 2, 3, 4]) == pytest.approx(pearson([1, 2.5, 2.5, 4], [1, 2, 3, 4]))
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)  # monotone, not linear


def test_bootstrap_interval_is_reproducible_and_brackets_the_estimate():
    xs = [0.1 * i for i in range(20)]
    ys = [x + 0.05 * math.sin(7 * i) for i, x in enumerate(xs)]
    a = bootstrap_interval(xs, ys, "pearson", 500)
    assert a == bootstrap_interval(xs, ys, "pearson", 500)
    assert a[0] <= pearson(xs, ys) <= a[1] <= 1.0


def _snapshots(points: list[tuple[float, float]], **kw):
    e = experiment(methods=("itop",), seeds=(0, 1))
    claim = Claim(id="corr", text="distance correlates with accuracy", experiment="main", a="itop",
                  kind="correlation", metric="graph_D", against="test_acc", population="snapshots", **kw)
    m = manifest(e, claims=[claim])
    specs = specs_for(e, FINAL)
    half = len(points) // 2
    res = {}
    for s in specs:
        mine = points[:half] if s.seed == 0 else points[half:]
        res[s.id] = run({"snapshot": {1500 * (i + 1): {"graph_D": d, "test_acc": a, "density": 0.01}
                                      for i, (d, a) in enumerate(mine)},
                         "final": {0: {"test_acc": 0.5, "density": 0.01}}})
    (r,) = report.evaluate_claims(m, report.aggregate(m, specs, res), res, specs)
    return r


def test_correlation_over_snapshots_held_within_noise_failed():
    line = [(d, 0.1 + 0.02 * d) for d in range(10)]
    r = _snapshots(line, min_r=0.9)
    assert r.outcome == HELD and "Pearson r(graph_D, test_acc) = 1.000 over 10 points" in r.evidence
    assert "population: 10 snapshot rows of itop on vgg16, every seed" in r.evidence
    anti = [(d, 0.5 - 0.02 * d) for d in range(10)]
    assert _snapshots(anti, min_r=0.5).outcome == FAILED
    # a noisy positive relation below min_r whose interval still reaches it: within noise
    noisy = [(d, 0.1 + 0.02 * d + (0.15 if d % 3 == 0 else -0.1)) for d in range(10)]
    r = _snapshots(noisy, min_r=0.8)
    assert r.outcome == WITHIN_NOISE, r.evidence
    # lower is better: a negative relation holds
    assert _snapshots(anti, min_r=0.9, higher_is_better=False).outcome == HELD


def test_correlation_with_fewer_than_three_points_is_not_enough_data():
    r = _snapshots([(1.0, 0.2), (2.0, 0.3)])
    assert r.outcome == NOT_ENOUGH_DATA and "2 points" in r.evidence


def test_the_window_can_be_on_another_density_metric():
    # AP: the maskable set (BN gamma included) is at 80 % / 64 % while conv + linear weights are at 70 % / 50 %
    claim = Claim(id="w", text="lamp beats global", experiment="main", a="lamp", b=("global",), max_density=0.6,
                  window="density_conv_linear")
    e = experiment(methods=("global", "lamp"))
    m = manifest(e, claims=[claim])
    specs = specs_for(e, ())
    conv = [1.0, 0.7, 0.5]
    res = {s.id: round_run([0.8, 0.7, 0.6] if s.method == "lamp" else [0.8, 0.75, 0.55], density_conv_linear=conv)
           for s in specs}
    (r,) = report.evaluate_claims(m, report.aggregate(m, specs, res))
    # only round 2 (conv + linear 50 %) is in the window; on `density` (64 %) nothing would be
    assert r.outcome == HELD and "vgg16 at 64.0%; window: density_conv_linear <= 60%" in r.evidence
    plain = Claim(**{**claim.__dict__, "window": "density"})
    (r,) = report.evaluate_claims(manifest(e, claims=[plain]), report.aggregate(m, specs, res))
    assert r.outcome == NOT_ENOUGH_DATA and "no cell with remaining weights <= 60%" in r.evidence
