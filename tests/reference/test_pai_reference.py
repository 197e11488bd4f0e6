"""Lockstep: the project's pruning at initialisation (harness/pruning/pai.py, saliency.py) against the
transcription of the PAGS predecessor's code (tests/reference/iclr23_pai.py: VITA-Group/ramanujan-on-pai
``lib/prune/pruning_utils.py`` and ``main.py:prune_loop``).

Both sides start from the same initialisation (the transcription gets a deep copy), score in eval mode, and get the
same batches in the same order: the project draws them from its generator, the transcription's loader from a
generator with the same seed (a shuffling loader: a fresh pass each time it is iterated; for GraSP with ``batches: n``
one drawn list, iterated twice); Rand's and ERK's draws come from generators with the same seed. After every round
the test compares the scores (the project's SNIP normalised as the code does; equal within rtol 1e-5, and asserted
bit-equal: the project sums in the code's order), the masks (exactly), the kept counts per layer, the entries that
came back (regrowth), and the dense weights (the project keeps the initial weights through the rounds); after the last
round the effective weights ``w * m`` (exactly). With ``k_rule: iclr23`` the project keeps what the code keeps (its
threshold rule, ties included); with ``k_rule: round`` the transcription runs the project's declared rule
(``keep="round_topk"``: exactly ``round(d N)`` entries, ties by index), and the code's own rule against it is
measured. Every lockstep has planted differences that must make the comparison fail.
"""

from __future__ import annotations

import builtins
import math
import types

import pytest
import torch
from torch.nn import functional as F

from harness.models.build import build_model
from harness.pruning import allocation, masks as masks_mod
from harness.pruning.masks import MaskSet
from harness.pruning import pai
from harness.pruning.methods.at_init import AtInitParams

from . import iclr23_pai as ref
from .common import choose_at_init, clone_model, tiny_data, tiny_resnet20

BATCH = 16
SEED = 11


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(3)
    if name == "resnet20":
        return tiny_resnet20(seed=3)
    if name == "resnet34":
        return build_model("resnet34_tv_imagenet_stem", 10, 1 / 16, "iclr23")
    return build_model("vgg16_bn_tv_4096fc", 10, 1 / 32, "iclr23")


def _spec(score: str, density: float, allocation_: str = "global", **params):
    return types.SimpleNamespace(
        score=score, allocation=allocation_, target_sparsity=round(1 - density, 10),
        training=types.SimpleNamespace(batch_size=BATCH, drop_last=False),
        params=AtInitParams(mode=params.pop("mode", "eval"), **params))


class Passes:
    """A shuffling loader: every ``iter`` is a fresh pass drawn from ``gen`` (the first ``n`` batches, or all)."""

    def __init__(self, data, gen, n):
        self.data, self.gen, self.n = data, gen, n

    def __iter__(self):
        it = self.data.train_batches(self.gen, BATCH, drop_last=False)
        return it if self.n is None else (b for _, b in zip(range(self.n), it))


def _project(model, spec, data, seed=SEED):
    """Run the project's choice of mask; record every round (scores, masks, stats, dense weights)."""
    masks = MaskSet.for_model(model, "conv_and_linear_weights")
    rounds = []
    real = pai._select

    def select(masks_, spec_, s, density):  # a spy on every round's selection
        stats = real(masks_, spec_, s, density)
        rounds.append({"scores": [t.detach().clone() for t in s], "stats": stats,
                       "masks": [m.clone() for m in masks.masks.values()],
                       "dense": [p.detach().clone() for p in masks.params.values()]})
        return stats

    pai._select = select
    try:
        choose_at_init(spec, model, masks, data, torch.Generator().manual_seed(seed))
    finally:
        pai._select = real
    final = {"masks": [m.clone() for m in masks.masks.values()],
             "weights": [p.detach().clone() for p in masks.params.values()]}
    return rounds, final


def _reference(model, kind, data, density, rounds, n_batches, keep="round_topk", seed=SEED, fixed=False, **opt):
    """Run the transcription; record every round the same way."""
    hook, masked = ref.setup(model)
    gen = torch.Generator().manual_seed(seed)
    loader = Passes(data, gen, n_batches)
    if fixed:  # one drawn list: both GraSP passes see the same batches
        loader = list(loader)
    pruner = {"snip": lambda: ref.SNIP(masked), "grasp": lambda: ref.GraSP(masked, hook, **opt),
              "synflow": lambda: ref.SynFlow(masked, hook, **opt), "rand": lambda: ref.Rand(masked, gen),
              "erk": lambda: ref.ERK(masked, gen)}[kind]()
    out = []

    def observe(r, p):
        out.append({"scores": [p.scores[id(w)].clone() for _, w in masked] if p.scores else None,
                    "masks": [m.detach().bool().clone() for m, _ in masked],
                    "dense": [w.detach().clone() for _, w in masked]})

    ref.prune_loop(model, F.nll_loss, pruner, loader, "cpu", density, "global", rounds, keep=keep, observe=observe)
    final = {"masks": [m.detach().bool().clone() for m, _ in masked], "weights": ref.effective_weights(model),
             "pruner": pruner}
    return out, final


def _normalised(scores, kind):
    """The code's normalisation of the project's raw scores (SNIP: over the global sum, :215-220)."""
    if kind != "snip":
        return scores
    norm = torch.sum(torch.cat([torch.flatten(s) for s in scores]))
    return [s / norm for s in scores]


def _compare(proj, proj_final, refs, ref_final, kind, check_scores=True):
    """Every difference between the two runs, as text (empty: lockstep)."""
    problems = []
    if len(proj) != len(refs):
        return [f"{len(proj)} project rounds, {len(refs)} reference rounds"]
    prev_p = prev_r = None
    for r, (a, b) in enumerate(zip(proj, refs), start=1):
        if check_scores and b["scores"] is not None:
            for i, (x, y) in enumerate(zip(_normalised(a["scores"], kind), b["scores"])):
                if not torch.allclose(x.to(y.dtype), y, rtol=1e-5, atol=1e-12 * float(y.abs().max())):
                    problems.append(f"round {r} layer {i}: scores differ by {float((x - y).abs().max()):.3g}")
        diff = sum(int((x != y).sum()) for x, y in zip(a["masks"], b["masks"]))
        if diff:
            problems.append(f"round {r}: {diff} mask entries differ (kept {sum(int(m.sum()) for m in a['masks'])} "
                            f"vs {sum(int(m.sum()) for m in b['masks'])})")
        if [int(m.sum()) for m in a["masks"]] != [int(m.sum()) for m in b["masks"]]:
            problems.append(f"round {r}: per-layer kept counts differ")
        reg_r = 0 if prev_r is None else sum(int((m & ~o).sum()) for m, o in zip(b["masks"], prev_r))
        if prev_p is not None and a["stats"]["regrown"] != reg_r:
            problems.append(f"round {r}: regrown {a['stats']['regrown']} vs {reg_r}")
        if not all(torch.equal(x, y) for x, y in zip(a["dense"], b["dense"])):
            problems.append(f"round {r}: dense (initial) weights differ")
        prev_p, prev_r = a["masks"], b["masks"]
    if not all(torch.equal(x, y) for x, y in zip(proj_final["masks"], ref_final["masks"])):
        problems.append("final masks differ")
    if not all(torch.equal(x, y) for x, y in zip(proj_final["weights"], ref_final["weights"])):
        problems.append("final effective weights differ")
    return problems


def _bit_equal(proj, refs, kind) -> bool:
    """The scores of every round equal bit for bit (the project sums in the code's order)."""
    return all(torch.equal(x, y) for a, b in zip(proj, refs)
               for x, y in zip(_normalised(a["scores"], kind), b["scores"]))


def _regrowth(rounds):
    return [0] + [sum(int((m & ~o).sum()) for m, o in zip(b["masks"], a["masks"])) for a, b in zip(rounds, rounds[1:])]


def _lockstep(name, kind, density, rounds=1, n_batches=2, fixed=False, proj_kw=None, ref_kw=None, data=None,
              k_rule="iclr23", ref_keep=None):
    """Both sides on one model; ``k_rule`` the project's, the transcription with the matching rule (the code's own
    for ``iclr23``, the declared one for ``round``) unless ``ref_keep`` says otherwise."""
    data = data or tiny_data(32, 8)
    model = _model(name)
    twin = clone_model(model)
    score = {"rand": "random", "erk": "random"}.get(kind, kind)
    spec = _spec(score, density, "erk" if kind == "erk" else "global", rounds=rounds, batches=n_batches,
                 k_rule=k_rule, **({"draw": "bernoulli"} if kind == "erk" else {}), **(proj_kw or {}))
    p, pf = _project(model, spec, data)
    keep = ref_keep or {"iclr23": "iclr23", "round": "round_topk"}[k_rule]
    r, rf = _reference(twin, kind, data, density, rounds, n_batches, keep=keep, fixed=fixed, **(ref_kw or {}))
    return p, pf, r, rf


# ---------------------------------------------------------------------------------------------- SNIP and iterSNIP


@pytest.mark.parametrize("name, k_rule", [("resnet20", "iclr23"), ("resnet34", "iclr23"), ("vgg16", "iclr23"),
                                          ("resnet34", "round")])
def test_snip_one_round_lockstep(name, k_rule):
    p, pf, r, rf = _lockstep(name, "snip", 0.05, rounds=1, n_batches=None, k_rule=k_rule)  # batches: null
    assert _compare(p, pf, r, rf, "snip") == []
    assert _bit_equal(p, r, "snip")


ITER_ROUNDS = 10


@pytest.mark.parametrize("name, k_rule", [("resnet34", "iclr23"), ("vgg16", "iclr23"), ("resnet20", "iclr23"),
                                          ("resnet34", "round"), ("vgg16", "round")])
def test_itersnip_lockstep_every_round_with_regrowth(name, k_rule):
    p, pf, r, rf = _lockstep(name, "snip", 0.05, rounds=ITER_ROUNDS, n_batches=2, k_rule=k_rule)
    assert _compare(p, pf, r, rf, "snip") == []
    regrown = _regrowth(r)
    assert [x["stats"]["regrown"] for x in p] == regrown
    assert sum(x > 0 for x in regrown) >= ITER_ROUNDS // 2  # pruned entries come back, round after round
    assert _bit_equal(p, r, "snip")  # the scores are bit-equal too (same accumulation order)
    kept = [sum(int(m.sum()) for m in x["masks"]) for x in r]
    print(f"\n[iterSNIP {name} k_rule={k_rule}] kept per round {kept}; regrown per round (both sides) {regrown}")


def test_itersnip_planted_zeroed_initial_weights_fails(monkeypatch):
    """Before the fix, select_ zeroed the pruned initial weights: pruned entries score |g * 0| = 0."""
    real = MaskSet.select_

    def select_and_apply(self, *a, **kw):
        stats = real(self, *a, **kw)
        self.apply_()
        return stats

    monkeypatch.setattr(MaskSet, "select_", select_and_apply)
    p, pf, r, rf = _lockstep("vgg16", "snip", 0.05, rounds=4, n_batches=1, k_rule="round")
    problems = _compare(p, pf, r, rf, "snip")
    assert any("mask entries differ" in x for x in problems) and any("dense" in x for x in problems)
    assert sum(x["stats"]["regrown"] for x in p) == 0 < sum(_regrowth(r))


def test_itersnip_planted_stale_masks_in_score_inputs_fails(monkeypatch):
    """Before the fix, the loop's score inputs kept the first (all-ones) masks: every round scored the dense net."""
    real = MaskSet.score_inputs

    def dense_inputs(self, model=None, **kw):
        inputs = real(self, model, **kw)
        inputs.masks = {n: torch.ones_like(m) for n, m in inputs.masks.items()}
        return inputs

    monkeypatch.setattr(MaskSet, "score_inputs", dense_inputs)
    p, pf, r, rf = _lockstep("vgg16", "snip", 0.05, rounds=3, n_batches=1)
    problems = _compare(p, pf, r, rf, "snip")
    assert problems and not any(x.startswith("round 1") for x in problems)  # round 1 is dense on both sides


@pytest.mark.parametrize("k_rule", ["round", "iclr23"])
def test_itersnip_planted_k_off_by_one_fails(monkeypatch, k_rule):
    if k_rule == "round":
        real = masks_mod.target_rate

        def one_fewer(layers, d):
            total = sum(l.original_numel for l in layers)
            return real(layers, (round(d * total) - 1) / total)

        monkeypatch.setattr(masks_mod, "target_rate", one_fewer)
    else:  # the code's threshold rule with k = int(...) - 1 (the project's module only)
        monkeypatch.setattr(pai, "int", lambda x: builtins.int(x) - (1 if isinstance(x, float) else 0),
                            raising=False)
    p, pf, r, rf = _lockstep("vgg16", "snip", 0.05, rounds=2, n_batches=1, k_rule=k_rule)
    problems = _compare(p, pf, r, rf, "snip")
    assert any(x.startswith("round 1") and "mask entries differ" in x for x in problems)


def test_itersnip_code_k_rule_measured():
    """The project's exact rule (k_rule: round) against the code's rule: the size of the deviation if a manifest
    keeps k_rule: round. Zero-score ties (the outer taps of 3x3 convs on stage 4's 1x1 maps get no gradient) are all
    pruned by the code while its threshold is 0."""
    data = tiny_data(32, 8)  # one batch of 16 per round
    model = _model("resnet34")
    twin = clone_model(model)
    p, pf = _project(model, _spec("snip", 0.05, rounds=ITER_ROUNDS, batches=1), data)
    r, rf = _reference(twin, "snip", data, 0.05, ITER_ROUNDS, 1, keep="iclr23")
    n = sum(m.numel() for m in pf["masks"])
    kept_p = [sum(int(m.sum()) for m in x["masks"]) for x in p]
    kept_r = [sum(int(m.sum()) for m in x["masks"]) for x in r]
    zero = [sum(int((s == 0).sum()) for s in x["scores"]) for x in r]
    for rd, (a, b) in enumerate(zip(kept_p, kept_r), start=1):
        d = 0.05 ** (rd / ITER_ROUNDS)
        assert a == round((1 - round(1 - 0.05, 10)) ** (rd / ITER_ROUNDS) * n)
        k = int((1 - (1 - d)) * n)
        assert b == (n - zero[rd - 1] if k > n - zero[rd - 1] else k - 1)  # all zeros pruned, or k - 1 kept
    assert kept_p[-1] - kept_r[-1] in (1, 2)
    assert kept_r[0] < 0.8 * kept_p[0]  # the zero-score ties: far fewer kept in the first round
    differ = [sum(int((x != y).sum()) for x, y in zip(a["masks"], b["masks"])) for a, b in zip(p, r)]
    assert differ[-1] > 0
    print(f"\n[pai_exact_k] resnet34 w/16 ({n} prunable), iterSNIP {ITER_ROUNDS} rounds to d = 0.05, 1 batch: kept "
          f"per round, project {kept_p} vs code {kept_r} (zero scores in the code's rounds {zero}); mask entries "
          f"differing per round {differ}")


# ---------------------------------------------------------------------------------------------- GraSP


@pytest.mark.parametrize("temperature_on", ["log_softmax", "logits"])
@pytest.mark.parametrize("name", ["resnet34", "vgg16", "resnet20"])
def test_grasp_lockstep_same_batches_both_passes(name, temperature_on):
    p, pf, r, rf = _lockstep(name, "grasp", 0.1, n_batches=2, fixed=True,
                             proj_kw={"grasp_temperature_on": temperature_on},
                             ref_kw={"temperature_on": temperature_on})
    assert _compare(p, pf, r, rf, "grasp") == []
    assert _bit_equal(p, r, "grasp")


@pytest.mark.parametrize("temperature_on", ["log_softmax", "logits"])
def test_grasp_lockstep_full_pass(temperature_on):
    """``batches: null``: each pass is one pass over the whole split, reshuffled and re-augmented (the code iterates
    its shuffling loader twice)."""
    p, pf, r, rf = _lockstep("resnet34", "grasp", 0.1, n_batches=None, fixed=False,
                             proj_kw={"grasp_temperature_on": temperature_on},
                             ref_kw={"temperature_on": temperature_on})
    assert _compare(p, pf, r, rf, "grasp") == []
    assert _bit_equal(p, r, "grasp")


def test_grasp_planted_second_pass_on_other_batches_fails(monkeypatch):
    """The reviewer's finding: with ``batches: n`` the Hessian pass drew other batches than the gradient pass."""
    monkeypatch.setattr(pai, "_round_batches", lambda draw, gen, replay: (lambda: draw(gen)))
    p, pf, r, rf = _lockstep("vgg16", "grasp", 0.1, n_batches=2, fixed=True)
    assert any("scores differ" in x for x in _compare(p, pf, r, rf, "grasp"))


def test_grasp_planted_temperature_on_the_wrong_side_fails():
    p, pf, r, rf = _lockstep("resnet34", "grasp", 0.1, n_batches=1, fixed=True,
                             proj_kw={"grasp_temperature_on": "logits"}, ref_kw={"temperature_on": "log_softmax"})
    problems = _compare(p, pf, r, rf, "grasp")
    assert any("scores differ" in x for x in problems)
    print(f"\n[GraSP temperature on the logits vs the code's log-softmax] {problems}")


# ---------------------------------------------------------------------------------------------- SynFlow

SYN_ROUNDS = 10


@pytest.mark.parametrize("output", ["log_softmax", "raw"])
@pytest.mark.parametrize("name", ["resnet34", "vgg16", "resnet20"])
def test_synflow_lockstep_every_round(name, output):
    p, pf, r, rf = _lockstep(name, "synflow", 0.05, rounds=SYN_ROUNDS, proj_kw={"synflow_output": output},
                             ref_kw={"output": output})
    assert _compare(p, pf, r, rf, "synflow") == []
    assert _bit_equal(p, r, "synflow")
    assert _regrowth(r) == [0] * SYN_ROUNDS  # a pruned entry scores |0 * dR/dw| = 0: SynFlow never regrows


def test_synflow_planted_output_switch_fails():
    p, pf, r, rf = _lockstep("vgg16", "synflow", 0.05, rounds=2, proj_kw={"synflow_output": "raw"},
                             ref_kw={"output": "log_softmax"})
    assert any("scores differ" in x for x in _compare(p, pf, r, rf, "synflow"))


# ---------------------------------------------------------------------------------------------- Rand and ERK


@pytest.mark.parametrize("name", ["resnet20", "resnet34"])
def test_rand_lockstep_same_generator_draws(name):
    p, pf, r, rf = _lockstep(name, "rand", 0.1)
    assert _compare(p, pf, r, rf, "rand") == []
    assert _bit_equal(p, r, "rand")


def test_rand_planted_uniform_scores_fails(monkeypatch):
    real = pai._score_options
    monkeypatch.setattr(pai, "_score_options", lambda p: {**real(p), "random_scores": "uniform"})
    p, pf, r, rf = _lockstep("resnet20", "rand", 0.1)
    assert any("mask entries differ" in x for x in _compare(p, pf, r, rf, "rand"))


def _erk_project(name, density, data=None, seed=SEED):
    model = _model(name)
    twin = clone_model(model)
    masks = MaskSet.for_model(model, "conv_and_linear_weights")
    spec = _spec("random", density, "erk", draw="bernoulli")
    choose_at_init(spec, model, masks, data, torch.Generator().manual_seed(seed))
    _, rf = _reference(twin, "erk", data, density, 1, None, seed=seed)
    return masks, rf


@pytest.mark.parametrize("name, density", [("resnet34", 0.05), ("resnet34", 0.4), ("vgg16", 0.1), ("vgg16", 0.4),
                                           ("resnet20", 0.2)])
def test_erk_probabilities_and_bernoulli_draws_lockstep(name, density):
    masks, rf = _erk_project(name, density)
    shapes = [tuple(p.shape) for p in masks.params.values()]
    probs = allocation.erk_probabilities(shapes, 1 - round(1 - density, 10))
    want = [rf["pruner"].density_dict[i] for i in range(len(shapes))]
    assert probs == want  # bit-equal floats
    assert all(torch.equal(a, b) for a, b in zip(masks.masks.values(), rf["masks"]))
    assert all(torch.equal(w, v) for w, v in zip(masks.params.values(), rf["weights"]))
    if density == 0.4:
        assert sum(q == 1.0 for q in probs) >= 1  # some layers dense: the re-solve loop ran
    realised = masks.density()
    assert abs(realised - density) < 0.02


def test_erk_all_layers_at_the_maximum_become_dense_together():
    """Two layers share the largest raw probability: both become dense in the same pass (:351-355)."""
    shapes = [(4, 3, 3, 3), (4, 3, 3, 3), (64, 64, 3, 3), (10, 64)]
    probs = allocation.erk_probabilities(shapes, 0.5)
    import numpy as np  # the transcription on mask-shaped tensors
    masked = [(torch.ones(s), torch.ones(s)) for s in shapes]
    pr = ref.ERK(masked, torch.Generator().manual_seed(0))
    pr.mask(1 - 0.5)
    assert probs == [pr.density_dict[i] for i in range(4)]
    assert probs[0] == probs[1] == 1.0 and probs[2] < 1.0 and np.isfinite(probs[3])


def test_erk_planted_rounded_counts_and_score_draws_fail(monkeypatch):
    """Before: probabilities from the LAMP ERK counts (rounded) and random scores drawn before the Bernoulli draws."""
    def from_counts(shapes, d):
        layers = [allocation.Layer(str(i), torch.zeros(s), torch.ones(s, dtype=torch.bool), math.prod(s))
                  for i, s in enumerate(shapes)]
        counts = allocation.erk(layers, [None] * len(layers), allocation.target_rate(layers, d))
        return [k / l.original_numel for k, l in zip(counts, layers)]

    monkeypatch.setattr(pai, "erk_probabilities", from_counts)
    masks = MaskSet.for_model(_model("resnet34"), "conv_and_linear_weights")
    shapes = [tuple(p.shape) for p in masks.params.values()]
    assert from_counts(shapes, 0.1) != allocation.erk_probabilities(shapes, 0.1)

    monkeypatch.undo()
    real = pai._bernoulli

    def draws_scores_first(masks, score, allocation_, density, gen):
        torch.rand(7, generator=gen)  # any draw before the Bernoulli draws shifts the stream
        return real(masks, score, allocation_, density, gen)

    monkeypatch.setattr(pai, "_bernoulli", draws_scores_first)
    masks, rf = _erk_project("resnet34", 0.1)
    assert not all(torch.equal(a, b) for a, b in zip(masks.masks.values(), rf["masks"]))


# ---------------------------------------------------------------------------------------------- k rule, in numbers


@pytest.mark.parametrize("n", [21_272_768, 134_289_088, 83_948])
def test_code_k_rule_keeps_one_or_two_fewer(n):
    """The code keeps ``int((1 - (1 - d)) N) - 1`` entries (no ties); the project ``round(d N)``: the difference at
    the PAGS densities, for ResNet-34 and VGG-16 at full width and the ResNet-34 w/16 of these tests."""
    for d in (0.01, 0.05, 0.1, 0.2, 0.4):
        code = int((1 - (1 - d)) * n) - 1
        project = round((1 - round(1 - d, 10)) * n)
        assert 1 <= project - code <= 2


# ---------------------------------------------------------------------------------------------- k rules at boundaries


def _two_layers(scores_a, scores_b, previous=None):
    """A MaskSet and the transcription's pruner over two hand-made layers with the given scores."""
    pa, pb = torch.nn.Parameter(torch.ones(len(scores_a))), torch.nn.Parameter(torch.ones(len(scores_b)))
    masks = MaskSet({"a": pa, "b": pb})
    mask_a, mask_b = torch.ones(len(scores_a)), torch.ones(len(scores_b))
    if previous is not None:
        masks.set_masks_({"a": previous[0], "b": previous[1]})
        mask_a.copy_(previous[0].float())
        mask_b.copy_(previous[1].float())
    pruner = ref.Pruner([(mask_a, pa), (mask_b, pb)])
    sa, sb = torch.tensor(scores_a, dtype=torch.float32), torch.tensor(scores_b, dtype=torch.float32)
    pruner.scores = {id(pa): sa, id(pb): sb}
    return masks, pruner, [sa, sb]


@pytest.mark.parametrize("density, kept_code, kept_round", [
    (0.5, 4, 5),  # k = 5, the 5th largest (5.0) is tied three times across both layers: all three pruned
    (0.8, 7, 8),  # k = 8, the 8th largest is 1.0: pruned, the two zeros too
    (0.9, 8, 9),  # k = 9, threshold 0.0: both zeros pruned (ties at exact equality), 8 kept
    (1.0, 8, 10),  # k = 10: the smallest (0.0) is the threshold, so even d = 1 prunes both zeros
])
def test_k_rules_at_their_boundaries(density, kept_code, kept_round):
    a, b = [9.0, 8.0, 5.0, 0.0, 6.0], [7.0, 5.0, 5.0, 1.0, 0.0]
    spec = types.SimpleNamespace(score="random", allocation="global", params=AtInitParams(k_rule="iclr23"))
    masks, pruner, s = _two_layers(a, b)
    pai._select(masks, spec, s, 1 - (1 - density))
    pruner.mask(1 - density)
    assert [m.bool().tolist() for m, _ in pruner.masked_parameters] == [m.tolist() for m in masks.masks.values()]
    assert sum(int(m.sum()) for m in masks.masks.values()) == kept_code
    spec.params = AtInitParams(k_rule="round")
    masks, pruner, s = _two_layers(a, b)
    pai._select(masks, spec, s, density)
    pruner.mask(1 - density, keep="round_topk")
    assert [m.bool().tolist() for m, _ in pruner.masked_parameters] == [m.tolist() for m in masks.masks.values()]
    assert sum(int(m.sum()) for m in masks.masks.values()) == kept_round
    if density == 0.5:  # the round rule breaks the three-way tie at 5.0 by index: layer a's entry
        assert masks.masks["a"].tolist() == [True, True, True, False, True]


def test_code_k_rule_below_one_leaves_the_masks():
    """k = int(d N) < 1: the code's masks stay as they were (:70), they are not reset."""
    previous = (torch.tensor([True, False, True]), torch.tensor([False, True]))
    spec = types.SimpleNamespace(score="random", allocation="global", params=AtInitParams(k_rule="iclr23"))
    masks, pruner, s = _two_layers([3.0, 2.0, 1.0], [5.0, 4.0], previous)
    stats = pai._select(masks, spec, s, 0.1)  # int(0.1 * 5) = 0
    pruner.mask(1 - 0.1)
    assert stats == {"pruned": 0, "regrown": 0}
    assert [m.tolist() for m in masks.masks.values()] == [list(p.tolist()) for p in previous]
    assert [m.bool().tolist() for m, _ in pruner.masked_parameters] == [list(p.tolist()) for p in previous]
    with pytest.raises(ValueError, match="global threshold"):
        pai._select(masks, types.SimpleNamespace(score="random", allocation="erk", params=spec.params), s, 0.5)
