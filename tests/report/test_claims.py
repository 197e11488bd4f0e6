"""Claims judged against the seeds' noise: the comparison rule and its boundaries, outcomes and
their evidence, on hand-made cells."""

from __future__ import annotations

import pytest

from harness import report
from harness.config.schema import NoiseRule
from harness.report import FAILED, HELD, NOT_ENOUGH_DATA, WITHIN_NOISE, judge
from harness.report.claims import OK
from tests.report.fakes import FINAL, claim, experiment, final_run, manifest, round_run, run, specs_for

pytestmark = pytest.mark.usefixtures("fake_procedure")

# --------------------------------------------------------------------------- one comparison


def test_tie_holds_exactly():
    # a == b with margin 0 is ok, with one seed (plain comparison) and with spread: `<` not `<=`
    assert judge(70.0, None, 1, 70.0, None, 1).outcome == OK
    assert judge(70.0, 1.0, 3, 70.0, 1.0, 3).outcome == OK
    assert judge(70.0, 0.0, 2, 70.0, 0.0, 2).outcome == OK
    assert judge(71.0, None, 1, 72.0, None, 1, margin=1.0).outcome == OK  # a == b - margin
    assert judge(70.0, None, 1, 70.5, None, 1).outcome == FAILED


def test_noise_threshold_boundary():
    # se = sqrt(1/2 + 1/2) = 1, k = 2: a gap of exactly 2 is within noise, anything above fails
    v = judge(70.0, 1.0, 2, 72.0, 1.0, 2)
    assert v == report.Verdict(WITHIN_NOISE, 2.0, 2.0)
    v = judge(70.0, 1.0, 2, 72.0000001, 1.0, 2)
    assert v.outcome == FAILED and v.threshold == 2.0 and v.gap > 2.0
    # the margin is taken off the gap before it meets the noise
    assert judge(70.0, 1.0, 2, 73.0, 1.0, 2, margin=1.0).outcome == WITHIN_NOISE
    assert judge(70.0, 1.0, 2, 73.5, 1.0, 2, margin=1.0).outcome == FAILED
    # k from the claim
    assert judge(70.0, 1.0, 2, 72.5, 1.0, 2, noise=NoiseRule(k=3.0)).outcome == WITHIN_NOISE
    assert judge(70.0, 1.0, 2, 72.5, 1.0, 2, noise=NoiseRule(k=2.0)).outcome == FAILED


def test_plain_comparison_without_spread_or_with_rule_none():
    assert judge(70.0, None, 1, 70.1, 5.0, 3) == report.Verdict(FAILED, pytest.approx(0.1), None)
    assert judge(70.0, 5.0, 3, 70.1, None, 1).outcome == FAILED
    assert judge(70.0, 5.0, 1, 70.1, 5.0, 3).outcome == FAILED  # n < 2 decides even if a spread is given
    assert judge(70.0, 5.0, 3, 70.1, 5.0, 1).outcome == FAILED
    assert judge(70.0, 5.0, 3, 70.1, 5.0, 3, noise=NoiseRule(rule="none")).outcome == FAILED
    assert judge(70.0, 5.0, 3, 70.1, 5.0, 3, noise=NoiseRule(rule="stderr")).outcome == WITHIN_NOISE


def test_lower_is_better():
    assert judge(0.50, None, 1, 0.50, None, 1, higher_is_better=False).outcome == OK
    assert judge(0.40, None, 1, 0.50, None, 1, higher_is_better=False).outcome == OK
    v = judge(0.60, None, 1, 0.50, None, 1, higher_is_better=False)
    assert v.outcome == FAILED and v.gap == pytest.approx(0.1)
    assert judge(0.60, None, 1, 0.50, None, 1, margin=0.1, higher_is_better=False).outcome == OK


# --------------------------------------------------------------------------- claims over cells


def _setup(accs: dict[str, list[list[float]]], seeds=(0, 1), densities=None, **claim_kw):
    """Round runs per (method, seed): accs[method][seed] = accuracies of rounds 0..R."""
    e = experiment(methods=tuple(accs), seeds=seeds)
    m = manifest(e, claims=[claim(**claim_kw)])
    specs = specs_for(e, ())
    res = {s.id: round_run(accs[s.method][s.seed], densities) for s in specs}
    (result,) = report.evaluate_claims(m, report.aggregate(m, specs, res))
    return result


def test_issue_example_lamp_vs_global_with_three_seeds_is_within_noise():
    # LAMP 73.8 ± 1.5 vs global 73.9 ± 0.9, n = 3 each: a 0.1 point gap, se ≈ 1.01
    e = experiment(methods=("global", "lamp"), seeds=(0, 1, 2))
    m = manifest(e, claims=[claim(max_density=0.05)])
    specs = specs_for(e, FINAL)
    acc = {"lamp": [0.723, 0.738, 0.753], "global": [0.730, 0.739, 0.748]}
    res = {s.id: final_run(acc[s.method][s.seed], 0.0115) for s in specs}
    cs = report.aggregate(m, specs, res)
    lamp = next(c for c in cs if c.method == "lamp").stat("test_acc")
    assert lamp.text() == "73.8 ± 1.5" and next(c for c in cs if c.method == "global").stat("test_acc").text() == "73.9 ± 0.9"
    (r,) = report.evaluate_claims(m, cs)
    assert r.outcome == WITHIN_NOISE
    assert r.evidence.startswith("lamp below a baseline within noise in 1 of 1 comparisons (test_acc; noise: 2·se)")
    assert "lamp 73.8 ± 1.5 (n=3) < global 73.9 ± 0.9 (n=3), gap 0.10 <= 2·se = 2.02" in r.evidence
    assert "1.15% remaining" in r.evidence


def test_claim_held_counts_cells_in_the_density_range():
    r = _setup({"global": [[0.7, 0.7, 0.7, 0.7]] * 2, "lamp": [[0.7, 0.71, 0.72, 0.70]] * 2}, max_density=0.7)
    assert r.outcome == HELD
    assert r.evidence == ("lamp >= global on test_acc at all 2 compared cells "  # 0.64, 0.512 (and a tie at round 3)
                          "[compared lamp with global: vgg16 at 64.0%, 51.2%; window: remaining weights <= 70%]")


def test_claim_failed_names_cells_values_n_and_threshold():
    r = _setup({"global": [[0.70, 0.80, 0.80], [0.70, 0.82, 0.82]],
                "lamp": [[0.70, 0.70, 0.80], [0.70, 0.71, 0.81]]}, margin=1.0)
    assert r.outcome == FAILED
    assert r.evidence.startswith("lamp below a baseline beyond noise in 1 of 3 comparisons (test_acc, margin 1; noise: 2·se): ")
    assert ("vgg16, round 1 (80.0% remaining): lamp 70.5 ± 0.7 (n=2) < global 81.0 ± 1.4 (n=2), "
            "gap 9.50 > 2·se = 2.24") in r.evidence
    # a single seed: the plain comparison decides, and says so
    r = _setup({"global": [[0.70, 0.71]], "lamp": [[0.70, 0.70]]}, seeds=(0,))
    assert r.outcome == FAILED
    assert "lamp 70.0 (n=1) < global 71.0 (n=1), gap 1.00 > 0 (plain comparison: fewer than 2 seeds)" in r.evidence


def test_failed_beats_within_noise_and_within_noise_reports_the_largest_gap():
    # round 1: 0.5 points short, well within noise; round 2: 10 points short with tiny spread
    base = {"global": [[0.7, 0.70, 0.80], [0.7, 0.72, 0.801]], "lamp": [[0.7, 0.695, 0.70], [0.7, 0.715, 0.701]]}
    r = _setup(base)
    assert r.outcome == FAILED and "1 of 3 comparisons" in r.evidence and "round 2" in r.evidence
    assert "round 1" not in r.evidence
    base["lamp"] = [[0.7, 0.695, 0.79], [0.7, 0.715, 0.8]]  # now both short within noise
    r = _setup(base)
    assert r.outcome == WITHIN_NOISE and "within noise in 2 of 3 comparisons" in r.evidence
    assert "largest gap: vgg16, round 2" in r.evidence


def test_min_and_max_density_bound_the_compared_cells():
    accs = {"global": [[0.7, 0.8, 0.7, 0.7]] * 2, "lamp": [[0.7, 0.6, 0.7, 0.7]] * 2}  # lamp short at 80% only
    assert _setup(accs, max_density=0.8).outcome == FAILED  # 0.8 is inside [0, 0.8]
    assert _setup(accs, max_density=0.79).outcome == HELD
    assert _setup(accs, min_density=0.7).outcome == FAILED
    assert _setup(accs, min_density=0.8).outcome == FAILED  # the bounds are inclusive
    assert _setup(accs, min_density=0.81).outcome == HELD  # only the dense round 0 remains


def test_higher_is_better_false_on_another_metric():
    e = experiment(methods=("global", "lamp"), seeds=(0,))
    specs = specs_for(e, FINAL)
    res = {s.id: final_run(0.7, 0.1, test_loss={"lamp": 0.5, "global": 0.4}[s.method]) for s in specs}
    m = manifest(e, claims=[claim(metric="test_loss", higher_is_better=False)])
    (r,) = report.evaluate_claims(m, report.aggregate(m, specs, res))
    assert r.outcome == FAILED and "lamp 0.500 (n=1) > global 0.400 (n=1), gap 0.1000 > 0" in r.evidence
    m = manifest(e, claims=[claim(a="global", b=("lamp",), metric="test_loss", higher_is_better=False)])
    (r,) = report.evaluate_claims(m, report.aggregate(m, specs, res))
    assert r.outcome == HELD and r.evidence.startswith("global <= lamp on test_loss at all 1 compared cell")


def test_not_enough_data_says_why():
    accs = {"global": [[0.7, 0.7, 0.7, 0.7]] * 2, "lamp": [[0.7, 0.7, 0.7, 0.7]] * 2}
    r = _setup(accs, max_density=0.036)
    assert r.outcome == NOT_ENOUGH_DATA
    assert r.evidence == "no cell with remaining weights <= 3.6% (lowest recorded: 51.2%)"
    r = _setup(accs, min_density=0.01, max_density=0.036)
    assert r.evidence == "no cell with remaining weights in [1%, 3.6%] (lowest recorded: 51.2%)"

    e = experiment(methods=("global", "lamp"))
    m = manifest(e, claims=[claim()])
    specs = specs_for(e, FINAL)
    lamp_only = {s.id: final_run(0.7, 0.1) for s in specs if s.method == "lamp"}
    (r,) = report.evaluate_claims(m, report.aggregate(m, specs, lamp_only))
    assert r.outcome == NOT_ENOUGH_DATA and r.evidence == "no data for global at the lamp cells with remaining weights <= 100%"
    (r,) = report.evaluate_claims(m, report.aggregate(m, specs, {}))
    assert r.outcome == NOT_ENOUGH_DATA and r.evidence == "no data for lamp"


def test_diverged_cells_are_not_judged_and_are_named():
    e = experiment(methods=("global", "lamp"))
    m = manifest(e, claims=[claim()])
    specs = specs_for(e, FINAL)
    res = {s.id: final_run(0.8 if s.method == "global" else 0.7, 0.1) for s in specs}
    lamp1 = next(s for s in specs if s.method == "lamp" and s.seed == 1)
    res[lamp1.id] = run({}, status="FAILED", diverged=True, step=7)
    (r,) = report.evaluate_claims(m, report.aggregate(m, specs, res))
    assert r.outcome == NOT_ENOUGH_DATA
    assert r.evidence == ("every comparable cell has diverged or collapsed seeds (vgg16, final (10.0% remaining) vs "
                          "global (lamp diverged 1/2)); window: remaining weights <= 100%")


def test_result_rows_are_rounds_or_final_never_epochs():
    e = experiment(methods=("global", "lamp"), seeds=(0,))
    m = manifest(e, claims=[claim()])
    specs = specs_for(e, FINAL)
    res = {s.id: run({"epoch": {1: {"test_acc": 0.1 if s.method == "lamp" else 0.5, "density": 0.5}},
                      "final": {0: {"test_acc": 0.9, "density": 0.1}}}) for s in specs}
    (r,) = report.evaluate_claims(m, report.aggregate(m, specs, res))
    assert r.outcome == HELD and "at all 1 compared cell" in r.evidence


def test_dormant_claims_are_not_evaluated():
    m = manifest(experiment(), claims=[claim(), claim(id="other", experiment="not_in_profile")])
    assert [c.id for c in report.evaluate_claims(m, [])] == ["lamp_wins"]
    assert [c.id for c in report.dormant_claims(m)] == ["other"]


def test_methods_trained_to_a_target_meet_at_their_final_rows():
    """One-shot (rounds 0 and 1, then final) and DPF (final only) at the same target sparsity are
    compared at their final rows; before this rule one-shot was silently never compared."""
    e = experiment(methods=("one_shot", "dpf"), sparsities=(0.9,))
    specs = [s for s in specs_for(e, FINAL, targets=(0.9,)) if s.method == "dpf"]
    specs += [s for s in specs_for(e, (("round", 0), ("round", 1), ("final", 0)), targets=(0.9,))
              if s.method == "one_shot"]
    results = {s.id: (final_run(0.80, 0.1) if s.method == "dpf" else round_run([0.9, 0.85], [1.0, 0.1]))
               for s in specs}
    m = manifest(e, claims=[claim(a="dpf", b=("one_shot",))])
    (r,) = report.evaluate_claims(m, report.aggregate(m, specs, results))
    assert r.outcome == FAILED and "dpf 80.0 ± 0.0 (n=2) < one_shot 85.0 ± 0.0 (n=2)" in r.evidence
