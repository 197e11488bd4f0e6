"""Lockstep: the project's mask-graph metrics and PAGS sampler (harness/pruning/graph.py, pai.py) against
the transcriptions of the PAGS predecessor's graph scores (tests/reference/iclr23_graph.py: VITA-Group/ramanujan-on-pai
``lib/graphs/``) and of the third-party PAGS_SNIP pruner (tests/reference/pags_snip.py: Memoristor/WideTopo
``pruners/pags.py``, ``pruners/pruner.py``).

* per layer, on several real masks (SNIP at two densities, random, ERK on a small torchvision ResNet-34) and on
  hand-made boundary graphs: the ICLR'23 degrees, the no-score rule, sm / rm (σ1, σ2 against the code's eigsh), and
  the nested d-left-regular mean (IMDB);
* per layer and summed: PAGS_SNIP's Δr and λ and the distance D, with the declared σ2 fix on the transcription
  (and measured with it off);
* the PAGS sampler over a few candidates (4 at width 1/16, 6 at width 1/8): the same batches, the same candidate
  masks (exactly), the same distances (rel 1e-5: the code sums float32 layer norms, the project float64) and the same
  chosen index, with the declared deviations (shared permutation, fresh batches, exact k, σ2 fix, eval mode) switched
  on in the transcription; each switched off makes the comparison fail, and the failure is the deviation's size;
* the tie-break among candidates of equal distance.

The transcription's dense eigvalsh runs in float64 here (see pags_snip.EIG_DTYPE); the ICLR'23 eigsh in float32, as the
code, so sigma and the gaps agree to 2e-5 sigma_1.
"""

from __future__ import annotations

import itertools
import math
import types

import pytest
import torch

from harness.models.build import build_model
from harness.pruning import graph
from harness.pruning.masks import MaskSet
from harness.pruning import pai
from harness.pruning.methods.at_init import AtInitParams

from . import iclr23_graph as ig
from . import pags_snip as ps
from .common import choose_at_init, tiny_data

BATCH = 16


@pytest.fixture(autouse=True)
def _float64_eigvalsh(monkeypatch):
    """The PAGS_SNIP transcription's dense eigvalsh in float64 (pags_snip.EIG_DTYPE: the code's float32 call fails
    at random on some of these masks with multithreaded MKL)."""
    monkeypatch.setattr(ps, "EIG_DTYPE", torch.float64)


def _resnet34(width=1 / 16, seed=5):
    torch.manual_seed(seed)
    return build_model("resnet34_tv_imagenet_stem", 10, width, "iclr23")


def _spec(score, density, **params):
    return types.SimpleNamespace(score=score, allocation="erk" if params.get("draw") == "bernoulli" else "global",
                                 target_sparsity=round(1 - density, 10),
                                 training=types.SimpleNamespace(batch_size=BATCH, drop_last=True),
                                 params=AtInitParams(mode="eval", **params))


_MASKS: dict = {}


def _masks(kind: str):
    """(theta_0, masks) of the small ResNet-34 (width 1/16; ``_w8``: 1/8): SNIP at d = 0.05 and 0.3, random at 0.3,
    ERK Bernoulli at 0.2."""
    if kind not in _MASKS:
        model = _resnet34(1 / 8 if kind.endswith("_w8") else 1 / 16)
        theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
        masks = MaskSet.for_model(model, "conv_and_linear_weights")
        score, d, extra = {"snip05": ("snip", 0.05, {"batches": 1}), "snip30": ("snip", 0.3, {"batches": 1}),
                           "rand30": ("random", 0.3, {}), "erk20": ("random", 0.2, {"draw": "bernoulli"})}[
                               kind.removesuffix("_w8")]
        choose_at_init(_spec(score, d, **extra), model, masks, tiny_data(32, 8), torch.Generator().manual_seed(1))
        _MASKS[kind] = ({n: theta0[n] for n in masks.params}, {n: m.clone() for n, m in masks.masks.items()})
    return _MASKS[kind]


def _iclr23_problems(w, m, name, nested=False, **kw):
    """Differences between the project's layer metrics and the transcribed ICLR'23 scores of one layer."""
    lm = graph.layer_metrics(w, m, name=name, min_edges=0, min_density=0.0, nested=nested)
    layer = ig.layer(w, m)
    s = ig.ramanujan_score(layer)
    out = []
    if s is None:
        if not (math.isnan(lm.gap("iclr23_sm")) and math.isnan(lm.gap("iclr23_rm"))):
            out.append(f"{name}: the code gives no score, the project {lm.gap('iclr23_rm')}")
    else:
        for a, b, what in ((lm.d_L, s["d_l"], "d_L"), (lm.d_R, s["d_r"], "d_R")):
            if a != pytest.approx(b, rel=1e-6):
                out.append(f"{name}: {what} {a} vs {b}")
        tol = 2e-5 * s["t1"]  # the code's eigsh runs in float32
        for a, b, what in ((lm.sigma1, s["t1"], "sigma1"), (lm.sigma2, s["t2"], "sigma2"),
                           (lm.gap("iclr23_sm"), s["sm"], "sm"), (lm.gap("iclr23_rm"), s["rm"], "rm")):
            if not abs(a - b) <= tol:
                out.append(f"{name}: {what} {a} vs {b}")
    if nested:
        imdb = ig.iterative_mean_spectral_gap(layer, **kw)
        if imdb is None:
            if not math.isnan(lm.imdb("iclr23_sm")):
                out.append(f"{name}: the code gives no IMDB, the project {lm.imdb('iclr23_sm')}")
        else:
            for a, b, what in ((lm.imdb("iclr23_sm"), imdb[0], "imdb sm"), (lm.imdb("iclr23_rm"), imdb[1], "imdb rm")):
                if math.isnan(a) or abs(a - b) > 2e-5 * max(1.0, abs(b)) + 1e-4:
                    out.append(f"{name}: {what} {a} vs {b}")
    return out, s


# ---------------------------------------------------------------------------------------------- ICLR'23 scores


@pytest.mark.parametrize("kind", ["snip05", "snip30", "rand30", "erk20", "snip05_w8", "snip30_w8"])
def test_iclr23_layer_scores_lockstep_on_real_masks(kind):
    weights, masks = _masks(kind)
    problems, scored = [], 0
    for n in masks:
        p, s = _iclr23_problems(weights[n], masks[n], n)
        problems += p
        scored += s is not None
    assert problems == []
    assert 0 < scored < len(masks) or not kind.startswith("snip05")  # at d = 0.05 some fall below the degree rule
    print(f"\n[iclr23 {kind}] {scored} of {len(masks)} layers scored, sm/rm/sigma equal to the code's eigsh")


@pytest.mark.parametrize("kind", ["snip30", "rand30", "snip30_w8"])
def test_iclr23_nested_regular_mean_lockstep(kind):
    weights, masks = _masks(kind)
    names = [n for n in masks if masks[n].dim() == 4][1:40:6] + ["fc.weight"]  # a spread of layers (time)
    problems = []
    for n in names:
        problems += _iclr23_problems(weights[n], masks[n], n, nested=True)[0]
    assert problems == []


def _hand(B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A Linear layer whose mask is ``B`` (rows = outputs), weights 1 + i so every kept weight is non-zero."""
    w = torch.arange(1, B.numel() + 1, dtype=torch.float32).view(B.shape) / B.numel()
    return w, B.bool()


def _hand_graph() -> torch.Tensor:
    """5 outputs (right nodes) x 13 inputs (left nodes). Left degrees: six nodes of degree 3, all into outputs 0-3
    (output 4 is not in their subgraph's degree mean), two of degree 4 (a subgraph the code skips: 2 < 3 nodes),
    four of degree 5, one of degree 0 (dropped before the layer's mean)."""
    B = torch.zeros(5, 13)
    for c in range(6):
        B[[(c + k) % 4 for k in range(3)], c] = 1
    B[[0, 1, 2, 3], 6] = 1
    B[[1, 2, 3, 4], 7] = 1
    B[:, 8:12] = 1  # column 12 empty
    return B


def test_iclr23_degree_rule_and_nested_subgraphs_at_their_boundaries():
    B = _hand_graph()
    w, m = _hand(B)
    problems, s = _iclr23_problems(w, m, "hand", nested=True)
    assert problems == [] and s is not None
    assert s["d_l"] == B.sum() / 12  # the empty column is not in the mean
    sm, rm, count = ig.iterative_mean_spectral_gap(ig.layer(w, m))
    assert count == 2  # degrees 3 and 5; degree 4 (2 nodes) skipped
    assert ig.iterative_mean_spectral_gap(ig.layer(w, m), count_rule=False)[2] == 2  # the count rule is redundant
    # d_L exactly 3 is scored (>= 3) ...
    C = torch.zeros(4, 4)
    for i in range(4):
        C[i, [(i + k) % 4 for k in range(3)]] = 1  # 3-regular on 4 + 4 nodes
    problems, s = _iclr23_problems(*_hand(C), "3-regular", nested=True)
    assert problems == [] and s is not None and s["d_l"] == 3.0 and s["d_r"] == 3.0
    # ... and one edge fewer is not (d_R = 11/4 < 3)
    C[0, 0] = 0
    problems, s = _iclr23_problems(*_hand(C), "below", nested=True)
    assert problems == [] and s is None


def test_iclr23_planted_misreadings_fail(monkeypatch):
    """Misreadings that must fail: the subgraph's d_R over all right nodes (no zero-degree filter), t2 the second
    |eigenvalue| (sigma1), and a project degree rule at 2 instead of 3."""
    w, m = _hand(_hand_graph())
    lm = graph.layer_metrics(w, m, min_edges=0, min_density=0.0, nested=True)
    planted = ig.iterative_mean_spectral_gap(ig.layer(w, m), filter_zero=False)
    assert abs(planted[1] - lm.imdb("iclr23_rm")) > 1e-3
    weights, masks = _masks("snip30")
    n = [k for k in masks if masks[k].dim() == 4][-2]
    s = ig.ramanujan_score(ig.layer(weights[n], masks[n]), eig_index=1)
    lm = graph.layer_metrics(weights[n], masks[n], min_edges=0, min_density=0.0)
    assert abs(s["rm"] - lm.gap("iclr23_rm")) > 1e-2
    C = torch.zeros(4, 4)
    for i in range(4):
        C[i, [(i + k) % 4 for k in range(3)]] = 1
    C[0, 0] = 0
    monkeypatch.setattr(graph, "_ICLR23_MIN_DEGREE", 2)
    assert _iclr23_problems(*_hand(C), "below")[0] != []


# ---------------------------------------------------------------------------------------------- PAGS_SNIP distance


def _pags_layers(weights, masks, sigma2_fix):
    layers: dict = {}
    d = ps.total_distance({n: m.float() for n, m in masks.items()}, weights, sigma2_fix, layers=layers)
    return float(d), layers


@pytest.mark.parametrize("kind", ["snip30", "rand30", "erk20", "snip30_w8", "rand30_w8"])
def test_pags_distance_lockstep_per_layer_and_sum(kind):
    weights, masks = _masks(kind)
    d_ref, layers = _pags_layers(weights, masks, sigma2_fix=True)
    d_proj = graph.distance(weights, masks)
    rows = {r["name"]: r for r in graph.layer_table(weights, masks)}
    assert set(layers) == {n for n, r in rows.items() if r["valid"]}  # the same valid layers (> 1000 edges)
    for n, part in layers.items():
        r = rows[n]
        assert r["gap_pags_snip_fixed"] == pytest.approx(part["delta_r"], abs=3e-5 * r["sigma1"])
        assert r["lambda"] == pytest.approx(part["lambda"], abs=3e-5 * r["omega1"])
        assert r["term"] == pytest.approx(part["distance"], rel=1e-4, abs=1e-4)
    assert d_proj == pytest.approx(d_ref, rel=1e-5)
    # the code as written (no sigma2 fix): lambda is 0 up to round-off, Delta_r uses sigma1
    d_code, code_layers = _pags_layers(weights, masks, sigma2_fix=False)
    assert all(abs(p["lambda"]) <= 1e-5 * rows[n]["omega1"] for n, p in code_layers.items())
    assert all(p["delta_r"] == pytest.approx(2 * math.sqrt(rows[n]["d_bar"] - 1) - rows[n]["sigma1"], rel=1e-4)
               for n, p in code_layers.items())
    print(f"\n[pags_sigma2_fix {kind}] {len(layers)} valid layers; D with the fix {d_ref:.4f} (project {d_proj:.4f}), "
          f"as coded {d_code:.4f}")


# ---------------------------------------------------------------------------------------------- the PAGS sampler

CONFIGS = {"w16": (1 / 16, 0.2, 4), "w8": (1 / 8, 0.1, 6)}  # width, density, candidates

_PROJECT: dict = {}


def _project_pags(seed=3, config="w16"):
    """The project's PAGS over SNIP (cached: the same run serves every comparison): its info, every candidate's
    mask (a spy on select_), the final masks."""
    patched = pai._improves is not _IMPROVES or graph.distance is not _DISTANCE
    if (seed, config) not in _PROJECT or patched:
        width, density, candidates = CONFIGS[config]
        model = _resnet34(width)
        masks = MaskSet.for_model(model, "conv_and_linear_weights")
        seen = []
        real = masks.select_

        def select_(*a, **kw):
            stats = real(*a, **kw)
            seen.append({n: m.clone() for n, m in masks.masks.items()})
            return stats

        masks.select_ = select_
        spec = _spec("snip", density, candidates=candidates, batches=1)
        info = choose_at_init(spec, model, masks, tiny_data(64, 8), torch.Generator().manual_seed(seed))
        if patched:
            return info, seen, masks  # a monkeypatched run is not cached
        _PROJECT[seed, config] = (info, seen, masks)
    return _PROJECT[seed, config]


_IMPROVES, _DISTANCE = pai._improves, graph.distance


def _sampler(seed=3, config="w16", **switches):
    """The project's PAGS over SNIP and the transcription, from one init, one data stream seed, eval mode; the
    transcription with the declared deviations on, except those ``switches`` turn off."""
    width, density, candidates = CONFIGS[config]
    info, seen, masks = _project_pags(seed, config)
    data = tiny_data(64, 8)
    twin = _resnet34(width)  # the same init as the project's model
    twin.eval()  # deviation pags_iclr23_scoring_setup (WideTopo scores in train mode)
    gen = torch.Generator().manual_seed(seed)
    stream = batch_stream_on(data, gen)  # fresh batches, the same generator as the permutations
    cands = []
    opts = {"sigma2_fix": True, "shared_perm": True, "k_rule": "exact", **switches}
    best, _ = ps.pags_snip(twin, list(masks.params), stream, 1 - round(1 - density, 10), candidates, gen,
                           observe=lambda i, m, d: cands.append((m, d)), **opts)
    return info, seen, masks, cands, best


def batch_stream_on(data, gen):
    """The project's PAGS stream (fresh reshuffled epochs, drop_last) on a given generator."""
    while True:
        yield from data.train_batches(gen, BATCH, drop_last=True)


def _sampler_problems(info, seen, masks, cands, best):
    out = []
    if len(seen) != len(cands):
        return [f"{len(seen)} vs {len(cands)} candidates"]
    for i, (a, (b, d)) in enumerate(zip(seen, cands)):
        diff = sum(int((a[n] != b[n].bool()).sum()) for n in a)
        if diff:
            out.append(f"candidate {i}: {diff} mask entries differ")
        if info["pags_distances"][i] != pytest.approx(d, rel=1e-5):
            out.append(f"candidate {i}: D {info['pags_distances'][i]} vs {d}")
    chosen = max(range(len(cands)), key=lambda i: (cands[i][1], -i))
    if info["pags_chosen"] != chosen:
        out.append(f"chosen {info['pags_chosen']} vs {chosen}")
    if not all(torch.equal(masks.masks[n], best[n].bool()) for n in best):
        out.append("final masks differ")
    return out


@pytest.mark.parametrize("config", ["w16", "w8"])
def test_pags_sampler_lockstep(config):
    info, seen, masks, cands, best = _sampler(config=config)
    assert _sampler_problems(info, seen, masks, cands, best) == []
    assert len(set(info["pags_distances"])) == CONFIGS[config][2]
    print(f"\n[PAGS sampler {config}] {CONFIGS[config][2]} candidates, D = "
          f"{[round(d, 4) for d in info['pags_distances']]}, chosen {info['pags_chosen']} on both sides")


@pytest.mark.parametrize("switch", ["shared_perm", "sigma2_fix", "k_rule"])
def test_pags_sampler_without_a_declared_deviation_differs(switch):
    """Each declared deviation switched off in the transcription (the code as written) makes the lockstep fail;
    the printed numbers are the deviation's size on this model."""
    off = {"shared_perm": False, "sigma2_fix": False, "k_rule": "pags_snip"}[switch]
    info, seen, masks, cands, best = _sampler(**{switch: off})
    problems = _sampler_problems(info, seen, masks, cands, best)
    assert problems != []
    if switch == "k_rule":
        n_all = sum(p.numel() for p in _resnet34().parameters())
        n_prunable = sum(m.numel() for m in masks.masks.values())
        kept_code = [sum(int(m.sum()) for m in c.values()) for c, _ in cands]
        density = CONFIGS["w16"][1]
        assert all(k == n_prunable - int((1 - density) * n_all) - 1 for k in kept_code)  # k + 1 pruned, no ties
    print(f"\n[PAGS without {switch}] {problems}")


def test_pags_tie_break_keeps_the_first_of_equal_distances(monkeypatch):
    """Candidates 1 and 2 have the same, largest distance: both sides keep candidate 1 (WideTopo pags.py:244, a
    strictly larger distance replaces the best); a tie-break that keeps the last is caught."""
    values = [2.0, 5.0, 5.0, 1.0]
    proj, code = itertools.cycle(values), itertools.cycle(values)
    monkeypatch.setattr(graph, "distance", lambda *a, **kw: next(proj))
    monkeypatch.setattr(ps, "total_distance", lambda *a, **kw: torch.tensor(next(code)))
    info, seen, masks, cands, best = _sampler()
    assert info["pags_chosen"] == 1 and [d for _, d in cands] == values
    assert _sampler_problems(info, seen, masks, cands, best) == []
    assert all(torch.equal(best[n].bool(), seen[1][n]) for n in best)

    monkeypatch.setattr(pai, "_improves", lambda d, b: b is None or d >= b)  # planted: the last of equals
    info, seen, masks, cands, best = _sampler()
    assert info["pags_chosen"] == 2
    assert _sampler_problems(info, seen, masks, cands, best) != []
