"""Transcription of the PAGS predecessor's layer graphs and Ramanujan scores: VITA-Group/ramanujan-on-pai @ ec1d583e,
``lib/graphs/generate_unstructured_bipartie_graphs.py`` (layer -> bipartite graph) and ``lib/graphs/scores.py``
(degrees, the Ramanujan gaps sm / rm, the nested d-left-regular subgraphs and their mean, "IMDB"). Written from the
code, rule by rule, each citing its file and line; nothing here comes from ``harness``. The code's graphs are
``torch_geometric`` ``Data`` objects built through networkx; here a graph is a plain dict with the same fields
(``edge_index``: every undirected edge in both directions, ``num_nodes``, ``dim_in``), and ``pyg.utils.degree`` /
``pyg.utils.subgraph`` are written out. The spectra use the code's own call, ``scipy.sparse.linalg.eigsh`` with
``k=3, which="LM"`` on a float32 sparse adjacency.
"""

from __future__ import annotations

import collections
import math

import numpy as np
import scipy.sparse.linalg
import torch
from scipy.sparse import coo_array


def bipartite_graph(weight: torch.Tensor) -> dict:
    """A layer's graph from its masked weight ``weight_mask * weight_orig`` (:217-226).

    ``generate_nx_graphs`` (:124-164): a conv weight ``(c_out, ...)`` is reshaped to ``(c_out, -1)`` and transposed,
    a Linear weight transposed, so ``dim_in`` = columns; left node ``i`` (input), right node ``dim_in + j`` (output);
    an edge where ``|w[i, j]| > 0`` (:155-159), so a kept weight that is exactly 0 has no edge. networkx's undirected
    graph becomes a directed one with both directions (``from_networkx``, :45)."""
    w = weight.detach()
    w = w.reshape(w.shape[0], -1).T  # (dim_in, dim_out)
    dim_in, dim_out = w.shape
    i, j = torch.nonzero(w.abs() > 0, as_tuple=True)
    src = torch.cat([i, j + dim_in])
    dst = torch.cat([j + dim_in, i])
    return {"dim_in": dim_in, "dim_out": dim_out, "edge_index": torch.stack([src, dst]),
            "num_nodes": dim_in + dim_out}


def degree(index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """``pyg.utils.degree``: float32 counts of every node in ``index``."""
    out = torch.zeros(num_nodes, dtype=torch.float32)
    return out.scatter_add_(0, index, torch.ones(index.numel(), dtype=torch.float32))


def subgraph(subset: torch.Tensor, edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """``pyg.utils.subgraph(subset, ..., relabel_nodes=True)``: the edges with both ends in ``subset``, nodes
    renumbered by their position in ``subset``."""
    keep = torch.zeros(num_nodes, dtype=torch.bool)
    keep[subset] = True
    e = edge_index[:, keep[edge_index[0]] & keep[edge_index[1]]]
    idx = torch.zeros(num_nodes, dtype=torch.long)
    idx[subset] = torch.arange(subset.numel())
    return idx[e]


def filter_zero_degree(graph: dict, n: int) -> tuple[dict, int]:
    """``filter_zero_degree`` (scores.py:73-96): drop zero-degree nodes; ``n`` becomes the number of left nodes
    kept."""
    deg = degree(graph["edge_index"][0], graph["num_nodes"])
    non_zero = deg != 0.0
    if int(non_zero.sum()) == deg.size(0):
        return graph, n
    dim_in = int(non_zero[0:n].sum())
    node_to_keep = torch.nonzero(non_zero).squeeze()
    e = subgraph(node_to_keep, graph["edge_index"], graph["num_nodes"])
    return {"edge_index": e, "num_nodes": int(node_to_keep.numel())}, dim_in


def get_eig_values(matrix, k: int = 3) -> list:
    """``get_eig_values`` (scores.py:19-27): the k eigenvalues of largest magnitude, as |values|, descending."""
    vals, _ = scipy.sparse.linalg.eigsh(matrix, k=k, which="LM")
    abs_eig = [abs(i) for i in vals]
    abs_eig.sort(reverse=True)
    return abs_eig


def ramanujan_score(layer: dict, eig_index: int = -1, filter_zero: bool = True) -> dict | None:
    """``ramanujan_score`` (scores.py:99-141) on ``{"graph", "dim_in"}``: None when the mean left or right degree of
    the zero-filtered graph is below 3 (:115); else ``t1`` = the largest |eigenvalue| of the float32 adjacency,
    ``t2`` = the third (``eig_index=-1`` of the top 3, :123), ``sm = 2 sqrt(t1 - 1) - t2`` (``delta_s``, :30-37),
    ``rm = sqrt(d_l - 1) + sqrt(d_r - 1) - t2`` (``delta_r``, :40-46). (``eig_index=1`` and
    ``filter_zero=False`` are planted misreadings.)"""
    graph, dim_in = filter_zero_degree(layer["graph"], layer["dim_in"]) if filter_zero else \
        (layer["graph"], layer["dim_in"])
    deg = degree(graph["edge_index"][0], graph["num_nodes"])
    d_avg_l = deg[0:dim_in].mean()
    d_avg_r = deg[dim_in:].mean()
    if not (d_avg_l >= 3 and d_avg_r >= 3):
        return None
    edge_index = graph["edge_index"].numpy()
    n = graph["num_nodes"]
    adj = coo_array((np.ones_like(edge_index[0]), (edge_index[0], edge_index[1])), shape=(n, n), dtype=np.float32)
    eig = get_eig_values(adj)
    t2, t1 = eig[eig_index], eig[0]
    sm_ub = 2 * math.sqrt(t1 - 1)
    rm_ub = math.sqrt(d_avg_l - 1) + math.sqrt(d_avg_r - 1)
    return {"sm": sm_ub - t2, "rm": rm_ub - t2, "t1": float(t1), "t2": float(t2), "d_l": float(d_avg_l),
            "d_r": float(d_avg_r)}


def find_d_left_regular(layer: dict, mindegree: int = 3, count_rule: bool = True):
    """``find_d_left_regular`` (scores.py:354-388): for every left degree value (first-seen order of a Counter),
    skipped when fewer than ``mindegree`` left nodes have it or it is 0 (:366), the subgraph of those left nodes and
    every right node, renumbered. (``count_rule=False`` is a planted misreading: ``mindegree`` as a degree.)"""
    g = layer["graph"]
    dim_in = layer["dim_in"]
    deg = degree(g["edge_index"][0], g["num_nodes"])
    d_l = deg[0:dim_in]
    d_r = deg[dim_in:]
    for d, count in collections.Counter(d_l.tolist()).items():
        if count_rule and (count < mindegree or d == 0.0):
            continue
        if not count_rule and (d < mindegree or d == 0.0 or count < 2):
            continue
        non_zero_idx = torch.nonzero(d_l == d).squeeze(1)
        right_nodes = torch.arange(d_r.size(0)) + dim_in
        node_to_keep = torch.cat([non_zero_idx, right_nodes], dim=0)
        e = subgraph(node_to_keep, g["edge_index"], g["num_nodes"])
        yield {"dim_in": count, "graph": {"edge_index": e, "num_nodes": int(node_to_keep.numel())}}


def iterative_mean_spectral_gap(layer: dict, filter_zero: bool = True, **kw) -> tuple[float, float, int] | None:
    """``iterative_mean_spectral_gap`` (scores.py:318-351): the mean sm and mean rm over the d-left-regular
    subgraphs that have a score; None if none has. (A subgraph with fewer than 3 left nodes never has a score:
    ``d_r <= count``, so the node-count rule of :366 only saves work.)"""
    sms, rms = [], []
    for sub in find_d_left_regular(layer, **kw):
        s = ramanujan_score(sub, filter_zero=filter_zero)
        if s is None:  # :334-335
            continue
        sms.append(s["sm"])
        rms.append(s["rm"])
    if not sms:
        return None
    return sum(sms) / len(sms), sum(rms) / len(rms), len(sms)


def layer(weight: torch.Tensor, mask: torch.Tensor) -> dict:
    """``{"graph", "dim_in"}`` of one masked layer, as ``mlp_to_network`` stores it (:193-214)."""
    g = bipartite_graph(weight * mask.to(weight.dtype))
    return {"graph": g, "dim_in": g["dim_in"], "dim_out": g["dim_out"]}
