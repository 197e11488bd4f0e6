"""Mask-graph metrics of PAGS (pags.md sections 2, 3, 8; harness/pruning/graph.py). Small real computations
on CPU (plus one CUDA check when a GPU is present); the whole file runs in a few seconds."""

from __future__ import annotations

import dataclasses

import csv
import io
import math
import re

import pytest
import torch
from torch import nn

from harness.pruning import graph as g
from harness.config.schema import GraphParams


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _adjacency(M: torch.Tensor) -> torch.Tensor:
    """The full (m + n)^2 bipartite adjacency [[0, M^T], [M, 0]] (what PAGS_SNIP decomposes)."""
    m, n = M.shape
    A = torch.zeros(m + n, m + n, dtype=torch.float64)
    A[:n, n:] = M.T
    A[n:, :n] = M
    return A


def _circulant(n: int, d: int) -> torch.Tensor:
    """d-regular bipartite graph on n + n nodes: union of d perfect matchings B[i, (i + k) mod n]."""
    B = torch.zeros(n, n)
    for k in range(d):
        B[torch.arange(n), (torch.arange(n) + k) % n] = 1.0
    return B


def _metrics(B: torch.Tensor, Bw: torch.Tensor | None = None, **kw) -> g.LayerMetrics:
    return g.graph_metrics(B, B if Bw is None else Bw, **kw)


# --------------------------------------------------------------------------- section 2: graph and spectra


def test_conv_reshape_puts_output_channels_on_rows():
    w = torch.randn(5, 3, 2, 2, generator=_gen())
    mask = torch.zeros_like(w, dtype=torch.bool)
    mask[1] = True  # every input of output channel 1
    mask[4, 2, 1, 0] = True  # one edge: output 4 <- input (c=2, kh=1, kw=0) = column 2*4 + 1*2 + 0
    B, Bw = g.layer_graph(w, mask)
    assert B.shape == (5, 12) and Bw.shape == (5, 12)
    assert B[1].sum() == 12 and B[4].sum() == 1 and B[4, 10] == 1 and B.sum() == 13
    assert torch.equal(Bw[1], w[1].reshape(-1).abs()) and Bw[4, 10] == w[4, 2, 1, 0].abs()
    assert Bw[0].abs().sum() == 0
    lm = g.layer_metrics(w, mask, min_edges=0, min_density=0.0)
    assert (lm.n_right, lm.n_left, lm.edges) == (5, 12, 13) and lm.shape == (5, 3, 2, 2)
    # left nodes = inputs: 12 of them with degree >= 1 (column 10 has 2); right = outputs: 2 non-empty rows
    assert lm.d_L == 13 / 12 and lm.d_R == 13 / 2 and lm.d_bar == 2 * 13 / 17


def test_linear_used_as_is_and_bw_is_abs_of_masked_weight():
    w = torch.randn(4, 6, generator=_gen(1))
    mask = (torch.rand(4, 6, generator=_gen(2)) < 0.5).float()
    B, Bw = g.layer_graph(w, mask)
    assert torch.equal(B, (mask != 0).float()) and torch.equal(Bw, (mask * w).abs())
    with pytest.raises(ValueError):
        g.layer_graph(w, mask.T)


def test_sigma_identity_against_dense_adjacency_eigendecomposition():
    M = (torch.rand(7, 11, generator=_gen(3)) < 0.45).double()
    Mw = M * torch.randn(7, 11, generator=_gen(4), dtype=torch.float64).abs()
    for mat, binary in ((M, True), (Mw, False)):
        sv = torch.linalg.svdvals(mat)
        eig = torch.linalg.eigvalsh(_adjacency(mat))
        expected = torch.sort(torch.cat([sv, -sv, torch.zeros(11 - 7, dtype=torch.float64)])).values
        torch.testing.assert_close(eig, expected, atol=1e-10, rtol=0)  # eigenvalues = +-sigma_i plus zeros
        abs_desc = eig.abs().sort(descending=True).values
        top = g.top2_singular_values(mat, binary=binary)
        assert abs(top[0] - abs_desc[0]) < 1e-10 and abs(top[0] - abs_desc[1]) < 1e-10  # +-sigma_1
        assert abs(top[1] - abs_desc[2]) < 1e-10  # sigma_2 = the 3rd largest |eigenvalue|
        assert top[1] < top[0] - 0.1


@pytest.mark.parametrize("shape", [(80, 400), (400, 80), (100, 100)])
def test_gram_route_equals_svdvals(shape):
    B = (torch.rand(*shape, generator=_gen(5)) < 0.2).float()
    Bw = B * torch.randn(*shape, generator=_gen(6)).abs()
    for M, binary in ((B, True), (Bw, False)):
        gram = g.top2_singular_values(M, "gram", binary=binary)
        svd = g.top2_singular_values(M, "svd")
        assert gram.dtype == torch.float64
        torch.testing.assert_close(gram, svd, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(svd, torch.linalg.svdvals(M.double())[:2], rtol=0, atol=0)


def test_binary_gram_in_float32_chunks_is_exact():
    B = (torch.rand(40, 3000, generator=_gen(7)) < 0.5).float()
    exact = B.double() @ B.double().T
    for chunk in (40 * 37, 40 * 1000, 2**25):  # many ragged chunks, a few, one
        G = g._gram(B, binary=True, chunk_elems=chunk)
        assert G.dtype == torch.float64 and torch.equal(G, exact)
    assert torch.equal(g._gram(B.T.contiguous(), binary=True, chunk_elems=40 * 37), exact)  # tall: B^T B side


def test_gram_route_is_exact_for_rank_one_matrices():
    u = (torch.rand(100, generator=_gen(12)) < 0.5).float()
    v = (torch.rand(300, generator=_gen(13)) < 0.5).float()
    M = torch.outer(u, v)  # rank 1: sigma = (sqrt(|u| |v|), 0); sqrt of eigvalsh round-off alone would be ~1e-6
    expected = math.sqrt(float(u.sum() * v.sum()))
    for mat, binary in ((M, True), (M * 0.25, False)):
        s1, s2 = g.top2_singular_values(mat, binary=binary).tolist()
        assert s1 == pytest.approx(expected * (1 if binary else 0.25), rel=1e-13) and abs(s2) < 1e-10
    lm = _metrics(torch.ones(40, 70), min_edges=0)  # dense layer: sigma = (sqrt(40 * 70), 0) exactly
    assert (lm.sigma1, lm.sigma2) == (math.sqrt(2800), 0.0)


def test_top2_pads_missing_singular_values_with_zero():
    assert g.top2_singular_values(torch.tensor([[3.0, 4.0]])).tolist() == [5.0, 0.0]
    assert g.top2_singular_values(torch.zeros(0, 5)).tolist() == [0.0, 0.0]


def test_lambda_nonzero_for_random_weighted_layer_guards_defect_1():
    w = torch.randn(24, 8, 3, 3, generator=_gen(8))
    mask = torch.rand(w.shape, generator=_gen(9)) < 0.3
    lm = g.layer_metrics(w, mask, min_edges=0, min_density=0.0)
    _, Bw = g.layer_graph(w, mask)
    sv = torch.linalg.svdvals(Bw.double())
    assert lm.lam == pytest.approx(float(sv[0] - sv[1]), abs=1e-9) and lm.lam > 0.1 * lm.omega1
    # PAGS_SNIP's reading (2nd entry of the sorted |eig| of the full adjacency) gives sigma_1 again, lambda == 0
    abs_desc = torch.linalg.eigvalsh(_adjacency(Bw.double())).abs().sort(descending=True).values
    assert float(abs_desc[0] - abs_desc[1]) == pytest.approx(0.0, abs=1e-9)
    assert lm.sigma2 < lm.sigma1 - 1.0  # and the gaps use sigma_2, not sigma_1


# --------------------------------------------------------------------------- section 3: gaps and rules


@pytest.mark.parametrize("d", [3, 5, 8])
def test_complete_bipartite_kdd_gap_is_the_ramanujan_bound(d):
    B = torch.ones(d, d)
    lm = _metrics(B, min_edges=0, min_density=0.0)
    assert lm.sigma1 == pytest.approx(d, abs=1e-12) and lm.sigma2 == pytest.approx(0.0, abs=1e-6)
    assert lm.d_L == lm.d_R == lm.d_bar == d
    for v in g.VARIANTS:  # all three bounds equal 2 sqrt(d - 1) on a d-regular graph with sigma_1 = d
        assert lm.gap(v) == pytest.approx(2 * math.sqrt(d - 1), abs=1e-6)


@pytest.mark.parametrize("n,d", [(12, 4), (9, 3), (16, 5)])
def test_circulant_d_regular_sigma1_is_d_and_sigma2_is_known(n, d):
    B = _circulant(n, d)
    assert torch.equal(B.sum(0), torch.full((n,), float(d))) and torch.equal(B.sum(1), torch.full((n,), float(d)))
    lm = _metrics(B, min_edges=0, min_density=0.0)
    # B is a circulant: its singular values are |sum_k w^(jk)| = |sin(pi j d / n) / sin(pi j / n)|, j = 1..n-1
    sigma2 = max(abs(math.sin(math.pi * j * d / n) / math.sin(math.pi * j / n)) for j in range(1, n))
    assert lm.sigma1 == pytest.approx(d, abs=1e-10) and lm.sigma2 == pytest.approx(sigma2, abs=1e-10)
    assert lm.gap("pags_snip_fixed") == pytest.approx(2 * math.sqrt(d - 1) - sigma2, abs=1e-10)
    assert lm.gap("iclr23_rm") == pytest.approx(2 * math.sqrt(d - 1) - sigma2, abs=1e-10)
    assert lm.gap("iclr23_sm") == pytest.approx(2 * math.sqrt(d - 1) - sigma2, abs=1e-10)


def test_iclr23_degree_rule_at_three():
    B = _circulant(6, 3)  # d_L = d_R = 3 exactly: scored
    lm = _metrics(B, min_edges=0, min_density=0.0)
    assert lm.d_L == 3 and not math.isnan(lm.gap("iclr23_rm")) and not math.isnan(lm.gap("iclr23_sm"))
    B2 = B.clone()
    B2[0, 0] = 0.0  # 17 edges on 6 + 6 non-empty nodes: d_L = d_R = 17/6 < 3 -> no score
    lm2 = _metrics(B2, min_edges=0, min_density=0.0)
    assert lm2.d_L == lm2.d_R == 17 / 6
    assert math.isnan(lm2.gap("iclr23_rm")) and math.isnan(lm2.gap("iclr23_sm"))
    assert lm2.gap("pags_snip_fixed") == pytest.approx(2 * math.sqrt(17 / 6 - 1) - lm2.sigma2)  # no such rule
    # one side below 3 is enough: 3 outputs fully connected to 2 inputs -> d_L = 3, d_R = 2
    lm3 = _metrics(torch.ones(3, 2), min_edges=0, min_density=0.0)
    assert (lm3.d_L, lm3.d_R) == (3, 2) and math.isnan(lm3.gap("iclr23_rm")) and math.isnan(lm3.gap("iclr23_sm"))


def test_degrees_drop_zero_degree_nodes_but_d_bar_does_not():
    B = torch.zeros(8, 10)
    B[:6, :6] = _circulant(6, 3)  # plus 2 empty rows and 4 empty columns
    lm = _metrics(B, min_edges=0, min_density=0.0)
    assert (lm.d_L, lm.d_R) == (3, 3) and lm.d_bar == 2 * 18 / 18
    assert lm.gap("iclr23_rm") == pytest.approx(2 * math.sqrt(2) - lm.sigma2)
    assert lm.gap("pags_snip_fixed") == pytest.approx(2 * math.sqrt(2 - 1) - lm.sigma2)


def test_pags_snip_fixed_is_nan_below_mean_degree_one():
    B = torch.zeros(10, 10)
    B[0, :9] = 1.0  # 9 edges on 20 nodes: d_bar = 0.9
    assert math.isnan(_metrics(B, min_edges=0, min_density=0.0).gap("pags_snip_fixed"))
    B[1, 0] = 1.0  # 10 edges: d_bar = 1 exactly -> 2 sqrt(0) - sigma2
    lm = _metrics(B, min_edges=0, min_density=0.0)
    assert lm.d_bar == 1.0 and lm.gap("pags_snip_fixed") == pytest.approx(-lm.sigma2)


def test_validity_edge_boundary():
    B = torch.zeros(50, 50)
    B.view(-1)[:1000] = 1.0  # exactly 1000 edges, density 0.4: invalid
    assert not _metrics(B).valid
    B.view(-1)[1000] = 1.0  # 1001: valid
    assert _metrics(B).valid
    assert not _metrics(B, min_edges=1001).valid


def test_validity_density_boundary():
    B = torch.zeros(2, 500_500)  # numel 1,001,000
    B[0, :1001] = 1.0  # 1001 edges, density exactly 1e-3: invalid; the spectra of an invalid layer are skipped
    lm = _metrics(B, compute_invalid=False)
    assert lm.density == 1e-3 and not lm.valid and math.isnan(lm.sigma1) and math.isnan(lm.lam)
    B[1, 0] = 1.0  # 1002 edges: valid
    lm = _metrics(B, compute_invalid=False)
    assert lm.valid and lm.sigma1 > 0
    assert g.is_valid(1001, 1_001_000, 1000, 9.99e-4) and not g.is_valid(1001, 1_001_000, 1000, 1e-3)
    assert not g.is_valid(0, 0, 0, 0.0)


# --------------------------------------------------------------------------- nested regular term (IMDB)


def _imdb_layer() -> torch.Tensor:
    """8 right x 16 left nodes. Left-degree groups (degree: count): 3: 3 (K_{3,3} on rows 0-2), 4: 5 (J - I on
    rows 0-4), 5: 2 (rows 3-7; fewer than 3 nodes, skipped), 1: 3 (row 5), 0: 3 (skipped)."""
    B = torch.zeros(8, 16)
    B[:3, :3] = 1.0
    B[:5, 3:8] = 1.0 - torch.eye(5)
    B[3:8, 8:10] = 1.0
    B[5, 10:13] = 1.0
    return B


def test_nested_regular_term_by_hand():
    B = _imdb_layer()
    assert sorted(B.sum(0).tolist()) == [0] * 3 + [1] * 3 + [3] * 3 + [4] * 5 + [5] * 2
    imdb = g.nested_regular_gaps(B)
    # degree 3 (3 nodes, the minimum count): K_{3,3}: sigma = 3, 0; d_L = 3, d_R = 3 over the 3 connected right
    #   nodes (not 9/8 over all 8); d_bar over all 8 right nodes = 18/11
    # degree 4: J - I on 5 + 5 nodes: sigma = 4, 1; d_L = d_R = 4; d_bar = 40/13
    # degree 5, 2 nodes: skipped (its pags_snip_fixed gap would be 2 sqrt(20/10 - 1) - 0 = 2)
    # degree 1: d_L = 1 < 3 -> no iclr23 score; d_bar = 6/11 < 1 -> no pags_snip_fixed score
    rm = [2 * math.sqrt(2) - 0, 2 * math.sqrt(3) - 1]
    sm = [2 * math.sqrt(3 - 1) - 0, 2 * math.sqrt(4 - 1) - 1]
    pags = [2 * math.sqrt(18 / 11 - 1) - 0, 2 * math.sqrt(40 / 13 - 1) - 1]
    assert imdb["iclr23_rm"] == pytest.approx(sum(rm) / 2, abs=1e-6)
    assert imdb["iclr23_sm"] == pytest.approx(sum(sm) / 2, abs=1e-6)
    assert imdb["pags_snip_fixed"] == pytest.approx(sum(pags) / 2, abs=1e-6)
    lm = _metrics(B, min_edges=0, min_density=0.0, nested=True)
    assert lm.nested and lm.imdb("iclr23_rm") == imdb["iclr23_rm"]
    assert len(lm.coordinate("iclr23_rm", nested=True)) == 3
    with pytest.raises(ValueError, match="nested"):
        _metrics(B, min_edges=0, min_density=0.0).coordinate("iclr23_rm", nested=True)
    # every subgraph below the iclr23 degree rule: no term (NaN), and the layer then drops out of D
    ring = _circulant(6, 2)
    lm2 = _metrics(ring, min_edges=0, min_density=0.0, nested=True)
    assert math.isnan(lm2.imdb("iclr23_rm")) and not math.isnan(lm2.imdb("pags_snip_fixed"))
    assert g.distance([lm2], variant="iclr23_sm", min_edges=0, min_density=0.0, nested=True) == 0.0


def test_nested_term_enters_distance_as_third_coordinate():
    B = _imdb_layer()
    w = {"l": B}
    masks = {"l": B != 0}
    lm = g.layer_metrics(B, B != 0, min_edges=0, min_density=0.0, nested=True)
    d = g.distance(w, masks, variant="iclr23_sm", min_edges=0, min_density=0.0, nested=True)
    assert d == pytest.approx(math.hypot(lm.gap("iclr23_sm"), lm.lam, lm.imdb("iclr23_sm")), abs=1e-12)


# --------------------------------------------------------------------------- distance


def _two_layer_example():
    """Layer a: K_{32,32} (1024 edges), every kept weight 0.5 -> sigma = (32, 0), omega = (16, 0).
    Layer b: conv (55, 55, 1, 1) with K_{30,30} + K_{25,25} blocks (1525 edges), weights 0.25 / -0.75
    -> sigma = (30, 25), omega = (25 * 0.75, 30 * 0.25) = (18.75, 7.5). Layer c: 600 edges, invalid."""
    wa = torch.full((32, 32), -0.5)
    ma = torch.ones(32, 32, dtype=torch.bool)
    wb = torch.zeros(55, 55, 1, 1)
    wb[:30, :30] = 0.25
    wb[30:, 30:] = -0.75
    wb[30:, :30] = 7.0  # masked out
    mb = torch.zeros(55, 55, 1, 1, dtype=torch.bool)
    mb[:30, :30] = True
    mb[30:, 30:] = True
    wc = torch.randn(30, 20, generator=_gen(10))
    mc = torch.ones(30, 20, dtype=torch.bool)
    return {"a": wa, "b": wb, "c": wc}, {"a": ma, "b": mb, "c": mc}


def test_distance_two_layers_equals_hand_sum():
    weights, masks = _two_layer_example()
    d_bar_b = 2 * 1525 / 110
    gap_a = 2 * math.sqrt(31)
    lam_a, lam_b = 16.0, 18.75 - 7.5
    hand = {
        "pags_snip_fixed": math.hypot(gap_a, lam_a) + math.hypot(2 * math.sqrt(d_bar_b - 1) - 25, lam_b),
        "iclr23_rm": math.hypot(gap_a, lam_a) + math.hypot(2 * math.sqrt(1525 / 55 - 1) - 25, lam_b),
        "iclr23_sm": math.hypot(gap_a, lam_a) + math.hypot(2 * math.sqrt(30 - 1) - 25, lam_b),
    }
    for v, expected in hand.items():
        assert g.distance(weights, masks, variant=v) == pytest.approx(expected, abs=1e-9)
    # the invalid layer c counts once the thresholds let it in
    c = g.layer_metrics(weights["c"], masks["c"], min_edges=0)
    both = g.distance(weights, masks, min_edges=500)
    assert both == pytest.approx(hand["pags_snip_fixed"] + math.hypot(c.gap("pags_snip_fixed"), c.lam), abs=1e-9)
    # a model and a {name: weight} mapping give the same D; so do computed layers and table rows
    model = nn.Module()
    for n, w in weights.items():
        model.register_parameter(n, nn.Parameter(w.clone()))
    assert g.distance(model, masks) == pytest.approx(hand["pags_snip_fixed"], abs=1e-9)
    rows = g.layer_table(weights, masks)
    assert g.distance(rows) == pytest.approx(hand["pags_snip_fixed"], abs=1e-9)
    assert g.distance([g.LayerMetrics.from_row(r) for r in rows]) == pytest.approx(hand["pags_snip_fixed"], abs=1e-9)


def test_distance_skips_nan_layers():
    weights, masks = _two_layer_example()
    # a valid star (1 output, 1100 inputs): d_L = 1 < 3, so no iclr23 score, and D over layers a, b is unchanged
    weights["s"] = torch.ones(1, 1100)
    masks["s"] = torch.ones(1, 1100, dtype=torch.bool)
    s = g.layer_metrics(weights["s"], masks["s"])
    assert s.valid and math.isnan(s.gap("iclr23_rm")) and not math.isnan(s.gap("pags_snip_fixed"))
    without = g.distance({k: weights[k] for k in "ab"}, {k: masks[k] for k in "ab"}, variant="iclr23_rm")
    assert g.distance(weights, masks, variant="iclr23_rm") == pytest.approx(without, abs=1e-12)


def test_distance_from_init_reference():
    weights, masks = _two_layer_example()
    ref = {"a": (1.0, 2.0), "b": (-3.0, 4.0), "c": (0.0, 0.0)}
    a = g.layer_metrics(weights["a"], masks["a"])
    b = g.layer_metrics(weights["b"], masks["b"])
    hand = math.hypot(a.gap("pags_snip_fixed") - 1, a.lam - 2) + math.hypot(b.gap("pags_snip_fixed") + 3, b.lam - 4)
    assert g.distance(weights, masks, reference="init", init_coordinates=ref) == pytest.approx(hand, abs=1e-9)
    # default reference: the dense network on the same weights; layer a is already dense, so it adds 0
    dense = g.reference_coordinates(weights, names=masks)
    assert dense["a"] == a.coordinate("pags_snip_fixed")
    b_dense = g.layer_metrics(weights["b"], torch.ones_like(masks["b"]))
    assert dense["b"] == b_dense.coordinate("pags_snip_fixed")
    hand_dense = math.dist(b.coordinate("pags_snip_fixed"), b_dense.coordinate("pags_snip_fixed"))
    assert g.distance(weights, masks, reference="init") == pytest.approx(hand_dense, abs=1e-9)
    with pytest.raises(ValueError, match="init_coordinates"):
        g.distance(g.layer_table(weights, masks), reference="init")


def test_distance_params_and_keywords_are_exclusive():
    weights, masks = _two_layer_example()
    p = GraphParams(variant="iclr23_sm")
    assert g.distance(weights, masks, params=p) == g.distance(weights, masks, variant="iclr23_sm")
    with pytest.raises(ValueError, match="not both"):
        g.distance(weights, masks, params=p, variant="iclr23_rm")


# --------------------------------------------------------------------------- params, table, csv, summary


def test_graph_params_frozen_and_validated():
    p = GraphParams()
    assert dataclasses.asdict(p) == {"variant": "pags_snip_fixed", "reference": "origin", "min_edges": 1000,
                                     "min_density": 1e-3, "nested": False}
    with pytest.raises(Exception):
        p.variant = "iclr23_rm"  # type: ignore[misc]
    for bad in ({"variant": "iclr23"}, {"reference": "dense"}, {"min_edges": -1}, {"min_edges": 1.5},
                {"min_density": 1.0}, {"nested": 1}):
        with pytest.raises(ValueError):
            GraphParams(**bad)
    q = GraphParams("iclr23_rm", "init", 10, 1e-3, True)
    assert hash(q) == hash(GraphParams(**dataclasses.asdict(q)))


def test_layer_table_csv_and_summary_on_a_small_model():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3), nn.Flatten(), nn.Linear(32, 10))
    gen = _gen(11)
    names = ["0.weight", "2.weight", "4.weight"]
    params = dict(model.named_parameters())
    masks = {n: torch.rand(params[n].shape, generator=gen) < 0.5 for n in names}
    p = GraphParams(min_edges=100, min_density=0.01)
    rows = g.layer_table(model, masks, p)
    assert [r["name"] for r in rows] == names
    assert list(rows[0])[:18] == ["name", "shape", "n_left", "n_right", "edges", "density", "d_L", "d_R", "d_bar",
                                  "sigma1", "sigma2", "omega1", "omega2", "gap_pags_snip_fixed", "gap_iclr23_rm",
                                  "gap_iclr23_sm", "lambda", "valid"]
    assert rows[1]["shape"] == (32, 16, 3, 3) and (rows[1]["n_right"], rows[1]["n_left"]) == (32, 144)
    assert [r["valid"] for r in rows] == [True, True, True]
    D = g.distance(model, masks, params=p)
    assert sum(r["term"] for r in rows) == pytest.approx(D, abs=1e-12)

    text = g.to_csv(rows)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert len(parsed) == 3 and parsed[1]["shape"] == "32x16x3x3" and parsed[1]["valid"] == "true"
    assert float(parsed[2]["sigma2"]) == rows[2]["sigma2"]  # repr round-trips

    s = g.summary(rows, p)
    assert all(re.fullmatch(r"[a-z0-9_]+", k.lower()) for k in s) and all(isinstance(v, float) for v in s.values())
    assert s["graph_D"] == pytest.approx(D, abs=1e-12)
    assert s["graph_layers"] == 3 and s["graph_valid_layers"] == 3
    assert s["graph_lambda_mean"] == pytest.approx(sum(r["lambda"] for r in rows) / 3)
    assert s["graph_ramanujan_gap_mean"] == pytest.approx(sum(r["gap_pags_snip_fixed"] for r in rows) / 3)
    assert s["graph_edges"] == sum(r["edges"] for r in rows)

    # init reference: the ref columns make the rows self-contained
    pi = GraphParams(reference="init", min_edges=100, min_density=0.01, nested=True)
    rows_i = g.layer_table(model, masks, pi)
    assert {"ref_gap", "ref_lambda", "ref_imdb", "imdb_iclr23_rm"} <= set(rows_i[0])
    assert g.summary(rows_i, pi)["graph_D"] == pytest.approx(g.distance(model, masks, params=pi), abs=1e-9)
    assert "graph_imdb_mean" in g.summary(rows_i, pi)
    assert g.to_csv([]) == ""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    weights, masks = _two_layer_example()
    cpu = g.layer_table(weights, masks)
    cuda = g.layer_table({k: w.cuda() for k, w in weights.items()}, {k: m.cuda() for k, m in masks.items()})
    for a, b in zip(cpu, cuda):
        for k, v in a.items():
            if isinstance(v, float) and not math.isnan(v):
                assert b[k] == pytest.approx(v, abs=1e-9), k
            elif not isinstance(v, float):
                assert b[k] == v, k
