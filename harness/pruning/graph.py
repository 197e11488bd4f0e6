"""Mask-graph metrics of PAGS (pags.md sections 2, 3, 7.2, 8): every prunable layer as a bipartite graph.

A layer's mask is the biadjacency matrix ``B`` of a bipartite graph (:func:`layer_graph`): a conv weight
``(C_out, C_in, k_h, k_w)`` becomes ``(C_out, C_in*k_h*k_w)``, a Linear weight is used as is. Rows are the
**right** nodes (outputs), columns the **left** nodes (inputs). ``B`` is binary, ``Bw = |mask * W|``.

Spectra (pags.md section 2). The adjacency ``[[0, B^T], [B, 0]]`` has the eigenvalues ``{+-sigma_i(B)}`` plus
zeros, so its "second-largest non-trivial eigenvalue" is ``sigma_2(B)``. Only the top-2 singular values of ``B``
and ``Bw`` are computed, never an eigendecomposition of the ``(m + n)^2`` adjacency (defect 2). The default
route (``method="gram"``, :func:`top2_singular_values`) takes the float64 ``eigvalsh`` of the Gram matrix on the
smaller side (``B B^T`` or ``B^T B``, accumulated in float64). For the binary ``B`` the product runs in float32
chunks, which is exact: every partial sum is an integer below ``2^24``. A (near) rank-1 matrix falls back to
``svdvals``, and a dense ``B`` has ``sigma = (sqrt(m n), 0)`` exactly. ``method="svd"`` calls
``torch.linalg.svdvals`` in float64. Both give the same numbers (tests/pruning/test_graph.py); the Gram route is cheaper.

The ICLR'23 scores (degrees, the no-score rule, sm / rm, IMDB) are checked in lockstep against a transcription of
VITA-Group/ramanujan-on-pai ``lib/graphs/`` (whose eigsh runs in float32), and ``Δr``, ``λ`` and ``D`` against the
PAGS_SNIP code with the sigma_2 fix (Memoristor/WideTopo ``pruners/pags.py``), in
tests/reference/test_graph_reference.py.
One difference is kept: the ICLR'23 code draws an edge only where the masked weight is non-zero, here every kept
entry is an edge (the same graph unless a kept weight is exactly 0).

Per-layer definitions (section 3.3). The degree names follow the ICLR'23 code (section 3.1):

* ``edges`` = ``|E|``, the number of non-zero mask entries; ``density = |E| / (n_L * n_R)``;
* ``d_L`` = mean degree of the left (input) nodes with non-zero degree = ``|E| / #{left nodes with degree > 0}``;
  ``d_R`` is the same for the right (output) nodes. Both are 0 for a layer with no edges;
* ``d_bar`` = mean degree over **all** nodes = ``2 |E| / (n_L + n_R)`` (the PAGS_SNIP ``d``);
* ``sigma1 >= sigma2``: the top-2 singular values of ``B``. ``omega1 >= omega2``: the same for ``Bw``
  (0 where the matrix has fewer than 2 rows or columns);
* Ramanujan gaps ``Δr``:

  - ``pags_snip_fixed = 2 sqrt(d_bar - 1) - sigma2``: the PAGS_SNIP formula with the sigma_2 fix (defect 1).
    NaN when ``d_bar < 1``, like the NaN that ``torch.sqrt`` gives in PAGS_SNIP, so such a layer is skipped;
  - ``iclr23_rm = sqrt(d_L - 1) + sqrt(d_R - 1) - sigma2``;
  - ``iclr23_sm = 2 sqrt(sigma1 - 1) - sigma2``.

  The ICLR'23 rule applies to both iclr23 variants: if ``d_L < 3`` or ``d_R < 3``, the layer has no score (NaN).
  Otherwise ``sigma1 >= sqrt(d_L d_R) >= 3``, so the square roots are always real;
* the weighted spectral gap ``lam = omega1 - omega2`` (``"lambda"`` in rows). PAGS_SNIP's value is ≡ 0 (defect 1);
* ``valid``: ``edges > min_edges`` and ``density > min_density``, both strict (defaults 1000, 1e-3, as in
  PAGS_SNIP).

Nested regular term (IMDB, section 3.1 item 6, only computed with ``nested=True``). For every non-zero
left-degree value ``d`` shared by at least 3 left nodes, the subgraph has those left nodes and **all** right
nodes. The layer's gap formula for each variant is applied to every subgraph, with that variant's own rule: the
iclr23 variants drop zero-degree right nodes for ``d_R`` and skip a subgraph with ``d_L < 3`` or ``d_R < 3``,
as the ICLR'23 code does. ``pags_snip_fixed`` takes ``d_bar = 2|E_S| / (n_S + n_R)`` over all nodes of the
subgraph and skips it when ``d_bar < 1``. The term is the mean over the subgraphs that were not skipped, or NaN
if every subgraph was skipped.

Distance (:func:`distance`). A layer's coordinate is ``c_l = (Δr_l, lam_l)``, plus ``imdb_l`` with
``nested=True``. ``D = sum over valid layers of ||c_l - r_l||_2``, where ``r_l = 0`` for ``reference="origin"``
(PAGS_SNIP). With ``reference="init"``, ``r_l`` is the coordinate of the same layer in the reference network.
By default that network is the **dense** network with the given weights, i.e. an all-ones mask on ``theta_0``;
this is one reading of "distance from its original initialization". It can also be given as
``init_coordinates`` (see :func:`reference_coordinates`). A layer is skipped if any component of ``c_l`` or
``r_l`` is NaN, as PAGS_SNIP skips a NaN layer distance. ``D`` is 0.0 when no layer counts.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from harness.config.schema import REFERENCES, VARIANTS, GraphParams, Reference, Variant

__all__ = [
    "VARIANTS",
    "REFERENCES",
    "METHODS",
    "GraphParams",
    "LayerMetrics",
    "layer_graph",
    "top2_singular_values",
    "ramanujan_gaps",
    "is_valid",
    "graph_metrics",
    "layer_metrics",
    "nested_regular_gaps",
    "reference_coordinates",
    "distance",
    "layer_table",
    "to_csv",
    "summary",
]

Method = Literal["gram", "svd"]
METHODS: tuple[str, ...] = ("gram", "svd")

_NESTED_MIN_NODES = 3  # ICLR'23 find_d_left_regular(mindegree=3): a minimum count of left nodes, not a degree
_ICLR23_MIN_DEGREE = 3  # ICLR'23 ramanujan_score: d_L >= 3 and d_R >= 3
_EXACT_INT_LIMIT = 2**24  # float32 integers are exact below this
_CHUNK_ELEMS = 2**25  # elements of one Gram chunk (256 MiB in float64)
_EPS64 = torch.finfo(torch.float64).eps
_NEAR_RANK1 = 16.0


# --------------------------------------------------------------------------- layer -> graph


def layer_graph(weight: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, Bw)`` of one layer: ``weight.reshape(shape[0], -1)`` (conv: ``(C_out, C_in*k_h*k_w)``).

    ``B`` is 1.0 where ``mask != 0`` and 0.0 elsewhere. ``Bw = |W|`` on the kept entries and 0 elsewhere,
    i.e. ``|mask * W|`` for a binary mask. Both are float32, or float64 if the weight is float64, on the
    weight's device.
    """
    if weight.dim() < 2:
        raise ValueError(f"a layer graph needs a weight with >= 2 dims, got shape {tuple(weight.shape)}")
    if tuple(mask.shape) != tuple(weight.shape):
        raise ValueError(f"mask shape {tuple(mask.shape)} != weight shape {tuple(weight.shape)}")
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    w = weight.detach().reshape(weight.shape[0], -1)
    keep = mask.detach().to(device=w.device).reshape(w.shape) != 0
    B = keep.to(dtype)
    Bw = torch.where(keep, w.to(dtype).abs(), torch.zeros((), dtype=dtype, device=w.device))
    return B, Bw


def _gram(M: torch.Tensor, binary: bool = False, chunk_elems: int = _CHUNK_ELEMS) -> torch.Tensor:
    """``M M^T`` if ``M`` is wide, else ``M^T M``: a ``k x k`` float64 matrix, ``k = min(M.shape)``.

    The product is accumulated in chunks of the long dimension, so no float64 copy of a large ``M`` is made.
    With ``binary=True`` (``M`` has only 0/1 entries) every chunk is multiplied in float32 and accumulated in
    float64. The float32 partial sums are integers at most the chunk length (below ``2^24``), so they are exact,
    also with TF32/bf16 matmul inputs, which represent 0 and 1 exactly.
    """
    wide = M.shape[0] <= M.shape[1]
    X = M if wide else M.T  # k x L, L >= k
    k, L = X.shape
    step = max(1, min(L, chunk_elems // max(k, 1)))
    if binary:
        step = min(step, _EXACT_INT_LIMIT - 1)
    cdt = torch.float32 if binary else torch.float64
    G = torch.zeros((k, k), dtype=torch.float64, device=M.device)
    for j in range(0, L, step):
        c = X[:, j:j + step].to(cdt)
        G += (c @ c.T).to(torch.float64)
    return G


def top2_singular_values(M: torch.Tensor, method: Method = "gram", binary: bool = False) -> torch.Tensor:
    """The two largest singular values of a 2-D ``M`` as a float64 tensor ``[s1, s2]`` on ``M``'s device.

    Missing values are 0 (a matrix with one row or column has one singular value). ``method="gram"``: float64
    ``eigvalsh`` of the smaller Gram matrix. A computed eigenvalue is off by about ``k * eps64 * s1^2`` at most,
    so ``s2`` is off by about ``k * eps64 * s1^2 / (2 s2)``. When ``s2^2`` is within ``16 k eps64 s1^2`` of 0 (a
    (near) rank-1 matrix, e.g. a dense binary layer), that bound is poor (``sqrt(eps) * s1``), so the values are
    recomputed with ``svdvals`` (error about ``eps64 * s1``). This never happens for random masks.
    ``method="svd"``: float64 ``torch.linalg.svdvals``, which computes
    all of them. ``binary=True`` allows the exact float32 Gram chunks (see :func:`_gram`).
    """
    if M.dim() != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {tuple(M.shape)}")
    out = torch.zeros(2, dtype=torch.float64, device=M.device)
    k = min(M.shape)
    if k == 0:
        return out
    if method == "gram":
        ev = torch.linalg.eigvalsh(_gram(M, binary=binary))  # ascending
        top = ev[-2:].flip(0).clamp_min(0.0).sqrt()
        if k >= 2 and bool(ev[-2] <= _NEAR_RANK1 * k * _EPS64 * ev[-1]):
            # s2 is within round-off of 0 (a (near) rank-1 matrix): sqrt would give ~sqrt(eps) * s1, svdvals ~eps * s1
            top = torch.linalg.svdvals(M.to(torch.float64))[:2]
    elif method == "svd":
        top = torch.linalg.svdvals(M.to(torch.float64))[:2]
    else:
        raise ValueError(f"unknown method '{method}' (expected one of: {', '.join(METHODS)})")
    out[: top.numel()] = top
    return out


# --------------------------------------------------------------------------- scalar rules


def ramanujan_gaps(d_L: float, d_R: float, d_bar: float, sigma1: float, sigma2: float) -> dict[str, float]:
    """The three section 3.3 gap variants. NaN means no score (see the module docstring)."""
    nan = math.nan
    pags = 2.0 * math.sqrt(d_bar - 1.0) - sigma2 if d_bar >= 1.0 else nan
    if d_L >= _ICLR23_MIN_DEGREE and d_R >= _ICLR23_MIN_DEGREE:
        rm = math.sqrt(d_L - 1.0) + math.sqrt(d_R - 1.0) - sigma2
        sm = 2.0 * math.sqrt(sigma1 - 1.0) - sigma2 if sigma1 >= 1.0 else nan  # sigma1 < 1 is unreachable here
    else:
        rm = sm = nan
    return {"pags_snip_fixed": pags, "iclr23_rm": rm, "iclr23_sm": sm}


def is_valid(edges: int, numel: int, min_edges: int = 1000, min_density: float = 1e-3) -> bool:
    """PAGS_SNIP's layer filter: strictly more than ``min_edges`` kept edges and density strictly above
    ``min_density``."""
    return numel > 0 and edges > min_edges and edges / numel > min_density


# --------------------------------------------------------------------------- per-layer metrics


@dataclass(frozen=True)
class LayerMetrics:
    """The graph metrics of one layer (module docstring). NaN = not computed or no score."""

    name: str
    shape: tuple[int, ...]
    n_left: int
    n_right: int
    edges: int
    density: float
    d_L: float
    d_R: float
    d_bar: float
    sigma1: float
    sigma2: float
    omega1: float
    omega2: float
    gap_pags_snip_fixed: float
    gap_iclr23_rm: float
    gap_iclr23_sm: float
    lam: float
    valid: bool
    nested: bool = False  # whether the imdb_* fields were computed
    imdb_pags_snip_fixed: float = math.nan
    imdb_iclr23_rm: float = math.nan
    imdb_iclr23_sm: float = math.nan

    def gap(self, variant: str) -> float:
        _check_variant(variant)
        return float(getattr(self, f"gap_{variant}"))

    def imdb(self, variant: str) -> float:
        _check_variant(variant)
        if not self.nested:
            raise ValueError(f"layer '{self.name}': the nested regular term was not computed (nested=False)")
        return float(getattr(self, f"imdb_{variant}"))

    def coordinate(self, variant: str, nested: bool = False) -> tuple[float, ...]:
        """``(Δr, lam)``, or ``(Δr, lam, imdb)`` with ``nested``."""
        c = (self.gap(variant), float(self.lam))
        return c + (self.imdb(variant),) if nested else c

    def as_row(self) -> dict[str, Any]:
        """The :func:`layer_table` row: ``lam`` becomes ``"lambda"``. The imdb columns appear only if they were
        computed."""
        row: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "nested" or (f.name.startswith("imdb_") and not self.nested):
                continue
            row["lambda" if f.name == "lam" else f.name] = getattr(self, f.name)
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> LayerMetrics:
        """Inverse of :meth:`as_row`. Extra keys (``term``, ``ref_*``) are ignored."""
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = "lambda" if f.name == "lam" else f.name
            if key in row:
                kw[f.name] = row[key]
        kw["nested"] = any(k.startswith("imdb_") for k in row)
        kw["shape"] = tuple(kw.get("shape", ()))
        return cls(**kw)


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown ramanujan gap variant '{variant}' (expected one of: {', '.join(VARIANTS)})")


def _degree_stats(B: torch.Tensor) -> tuple[int, int, int]:
    """(|E|, #left nodes with degree > 0, #right nodes with degree > 0) with one device sync."""
    stats = torch.stack([torch.count_nonzero(B), torch.count_nonzero(B.sum(0)), torch.count_nonzero(B.sum(1))])
    e, nl, nr = stats.tolist()
    return int(e), int(nl), int(nr)


def nested_regular_gaps(B: torch.Tensor, method: Method = "gram") -> dict[str, float]:
    """The IMDB term for each variant: the mean gap over the d-left-regular subgraphs (module docstring)."""
    n_right = B.shape[0]
    left_deg = B.sum(0)
    values, counts = torch.unique(left_deg, return_counts=True)
    found: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for d, c in zip(values.tolist(), counts.tolist()):
        if d == 0 or c < _NESTED_MIN_NODES:
            continue
        sub = B[:, left_deg == d]
        d = int(round(d))
        e = d * c
        connected_right = int((sub.sum(1) > 0).sum())
        s1, s2 = top2_singular_values(sub, method, binary=True).tolist()
        gaps = ramanujan_gaps(float(d), e / connected_right, 2.0 * e / (c + n_right), s1, s2)
        for v, g in gaps.items():
            if not math.isnan(g):
                found[v].append(g)
    return {v: (sum(gs) / len(gs) if gs else math.nan) for v, gs in found.items()}


def graph_metrics(B: torch.Tensor, Bw: torch.Tensor, *, name: str = "", shape: Sequence[int] | None = None,
                  min_edges: int = 1000, min_density: float = 1e-3, nested: bool = False,
                  method: Method = "gram", compute_invalid: bool = True) -> LayerMetrics:
    """:class:`LayerMetrics` from a layer's ``(B, Bw)`` (see :func:`layer_graph`).

    ``compute_invalid=False`` leaves the spectra, gaps, lambda and imdb of an invalid layer at NaN, so an
    invalid layer costs no SVD. :func:`distance` uses this.
    """
    if B.shape != Bw.shape or B.dim() != 2:
        raise ValueError(f"B and Bw must be 2-D of one shape, got {tuple(B.shape)} and {tuple(Bw.shape)}")
    n_right, n_left = B.shape
    numel = n_left * n_right
    edges, nz_left, nz_right = _degree_stats(B)
    d_L = edges / nz_left if nz_left else 0.0
    d_R = edges / nz_right if nz_right else 0.0
    d_bar = 2.0 * edges / (n_left + n_right) if n_left + n_right else 0.0
    valid = is_valid(edges, numel, min_edges, min_density)
    nan = math.nan
    s1 = s2 = w1 = w2 = nan
    imdb = {v: nan for v in VARIANTS}
    if valid or compute_invalid:
        if edges == numel:  # dense: B is the all-ones rank-1 matrix, sigma = (sqrt(m n), 0) exactly
            sB = torch.tensor([math.sqrt(numel), 0.0], dtype=torch.float64, device=B.device)
        else:
            sB = top2_singular_values(B, method, binary=True)
        s1, s2, w1, w2 = torch.cat([sB, top2_singular_values(Bw, method)]).tolist()
        if nested:
            imdb = nested_regular_gaps(B, method)
    gaps = ramanujan_gaps(d_L, d_R, d_bar, s1, s2)
    return LayerMetrics(
        name=name, shape=tuple(int(s) for s in (shape if shape is not None else B.shape)),
        n_left=n_left, n_right=n_right, edges=edges, density=edges / numel if numel else 0.0,
        d_L=d_L, d_R=d_R, d_bar=d_bar, sigma1=s1, sigma2=s2, omega1=w1, omega2=w2,
        gap_pags_snip_fixed=gaps["pags_snip_fixed"], gap_iclr23_rm=gaps["iclr23_rm"],
        gap_iclr23_sm=gaps["iclr23_sm"], lam=w1 - w2, valid=valid, nested=nested,
        imdb_pags_snip_fixed=imdb["pags_snip_fixed"], imdb_iclr23_rm=imdb["iclr23_rm"],
        imdb_iclr23_sm=imdb["iclr23_sm"],
    )


def layer_metrics(weight: torch.Tensor, mask: torch.Tensor, *, name: str = "", min_edges: int = 1000,
                  min_density: float = 1e-3, nested: bool = False, method: Method = "gram",
                  compute_invalid: bool = True) -> LayerMetrics:
    """:func:`graph_metrics` of :func:`layer_graph` ``(weight, mask)``."""
    B, Bw = layer_graph(weight, mask)
    return graph_metrics(B, Bw, name=name, shape=tuple(weight.shape), min_edges=min_edges,
                         min_density=min_density, nested=nested, method=method, compute_invalid=compute_invalid)


# --------------------------------------------------------------------------- model level

WeightsLike = nn.Module | Mapping[str, torch.Tensor]


def _named_weights(weights: WeightsLike, names: Iterable[str]) -> dict[str, torch.Tensor]:
    source = dict(weights.named_parameters()) if isinstance(weights, nn.Module) else weights
    out = {}
    for n in names:
        if n not in source:
            raise KeyError(f"no weight named '{n}' for its mask")
        out[n] = source[n]
    return out


def reference_coordinates(weights: WeightsLike, params: GraphParams = GraphParams(), *,
                          names: Iterable[str] | None = None, masks: Mapping[str, torch.Tensor] | None = None,
                          method: Method = "gram") -> dict[str, tuple[float, ...]]:
    """Coordinates ``(Δr, lam[, imdb])`` of the reference network for ``reference="init"``.

    By default (``masks=None``) this is the dense network: an all-ones mask on each named weight. Pass
    ``masks`` to use another reference mask. ``names`` defaults to the keys of ``masks``, or to every
    parameter of ``weights`` with >= 2 dims. Compute this once and pass it to every :func:`distance` call of a
    sampler as ``init_coordinates``.
    """
    if names is None:
        names = list(masks) if masks is not None else \
            [n for n, w in (weights.named_parameters() if isinstance(weights, nn.Module) else weights.items())
             if w.dim() >= 2]
    ws = _named_weights(weights, names)
    out = {}
    for n, w in ws.items():
        m = masks[n] if masks is not None else torch.ones(w.shape, dtype=torch.bool, device=w.device)
        lm = layer_metrics(w, m, name=n, min_edges=params.min_edges, min_density=params.min_density,
                           nested=params.nested, method=method)
        out[n] = lm.coordinate(params.variant, params.nested)
    return out


def _params_from(params: GraphParams | None, **switches: Any) -> GraphParams:
    defaults = GraphParams()
    if params is None:
        return GraphParams(**switches)
    changed = [k for k, v in switches.items() if v != getattr(defaults, k)]
    if changed:
        raise ValueError(f"give either params or the switch keywords, not both (also given: {', '.join(changed)})")
    return params


def _layer_term(lm: LayerMetrics, params: GraphParams,
                init_coordinates: Mapping[str, Sequence[float]] | None) -> float:
    """The layer's contribution ``||c - r||_2`` to D, or NaN if the layer does not count."""
    if not lm.valid:
        return math.nan
    c = lm.coordinate(params.variant, params.nested)
    if params.reference == "init":
        if init_coordinates is None or lm.name not in init_coordinates:
            raise KeyError(f"no init coordinate for layer '{lm.name}'")
        r = tuple(float(x) for x in init_coordinates[lm.name])
        if len(r) != len(c):
            raise ValueError(f"layer '{lm.name}': init coordinate has {len(r)} components, expected {len(c)}"
                             f" (nested={params.nested})")
    else:
        r = (0.0,) * len(c)
    if any(math.isnan(x) for x in c + r):
        return math.nan
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(c, r)))


def distance(layers: WeightsLike | Iterable[LayerMetrics | Mapping[str, Any]],
             masks: Mapping[str, torch.Tensor] | None = None, *,
             variant: Variant = "pags_snip_fixed", reference: Reference = "origin",
             init_coordinates: Mapping[str, Sequence[float]] | None = None,
             min_edges: int = 1000, min_density: float = 1e-3, nested: bool = False,
             params: GraphParams | None = None, method: Method = "gram") -> float:
    """PAGS's full-spectrum distance ``D`` of one mask (module docstring).

    ``layers`` is a model (``nn.Module``) or a ``{name: weight}`` mapping, together with ``masks``
    (``{name: mask}``; the layers are the mask names). It can also be already computed layers
    (:class:`LayerMetrics` or :func:`layer_table` rows) with ``masks=None``. In that case the validity stored
    in them is used, and ``min_edges``/``min_density`` are not applied again. ``params`` replaces the five
    switch keywords, and passing both is an error.

    With ``reference="init"`` and no ``init_coordinates``, the dense network's coordinates are computed from
    the given weights (this needs weights, not computed layers). A sampler should compute them once with
    :func:`reference_coordinates` and pass them in.
    """
    p = _params_from(params, variant=variant, reference=reference, min_edges=min_edges,
                     min_density=min_density, nested=nested)
    if masks is not None:
        if not isinstance(layers, (nn.Module, Mapping)):
            raise TypeError("with masks, layers must be a model or a {name: weight} mapping")
        ws = _named_weights(layers, masks)
        if p.reference == "init" and init_coordinates is None:
            init_coordinates = reference_coordinates(ws, p, method=method)
        metrics: Iterable[LayerMetrics] = (
            layer_metrics(w, masks[n], name=n, min_edges=p.min_edges, min_density=p.min_density,
                          nested=p.nested, method=method, compute_invalid=False)
            for n, w in ws.items())
    else:
        if isinstance(layers, Mapping) and layers and all(isinstance(v, LayerMetrics) for v in layers.values()):
            layers = list(layers.values())
        elif isinstance(layers, (nn.Module, Mapping)):
            raise TypeError("masks are required with a model or a {name: weight} mapping")
        if p.reference == "init" and init_coordinates is None:
            raise ValueError("reference='init' with computed layers needs init_coordinates")
        metrics = [x if isinstance(x, LayerMetrics) else LayerMetrics.from_row(x) for x in layers]
    total = 0.0
    for lm in metrics:
        t = _layer_term(lm, p, init_coordinates)
        if not math.isnan(t):
            total += t
    return total


# --------------------------------------------------------------------------- tables and summaries


def layer_table(weights: WeightsLike, masks: Mapping[str, torch.Tensor], params: GraphParams = GraphParams(), *,
                init_coordinates: Mapping[str, Sequence[float]] | None = None,
                method: Method = "gram") -> list[dict[str, Any]]:
    """One row per masked layer, in ``masks`` order, with every metric computed, invalid layers included.

    Columns: name, shape, n_left, n_right, edges, density, d_L, d_R, d_bar, sigma1, sigma2, omega1, omega2,
    gap_pags_snip_fixed, gap_iclr23_rm, gap_iclr23_sm, lambda, valid; then imdb_<variant> x3 with
    ``params.nested``; then ref_gap, ref_lambda (and ref_imdb) with ``reference="init"``; then ``term``, the
    layer's contribution to D under ``params`` (NaN if it does not count). The ref columns make the rows
    self-contained for :func:`summary`.
    """
    ws = _named_weights(weights, masks)
    if params.reference == "init" and init_coordinates is None:
        init_coordinates = reference_coordinates(ws, params, method=method)
    rows = []
    for n, w in ws.items():
        lm = layer_metrics(w, masks[n], name=n, min_edges=params.min_edges, min_density=params.min_density,
                           nested=params.nested, method=method)
        row = lm.as_row()
        if params.reference == "init":
            r = tuple(float(x) for x in init_coordinates[n])
            row["ref_gap"], row["ref_lambda"] = r[0], r[1]
            if params.nested:
                row["ref_imdb"] = r[2]
        row["term"] = _layer_term(lm, params, init_coordinates)
        rows.append(row)
    return rows


def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # round-trips; NaN is "nan"
    if isinstance(v, (tuple, list)):
        return "x".join(str(int(x)) for x in v)
    return str(v)


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as CSV text: a header, then one line per layer. The columns are the union of the row keys in
    first-seen order. A shape is written as ``64x3x7x7``, a bool as true/false, a float with ``repr`` (NaN is
    ``nan``)."""
    if not rows:
        return ""
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([_cell(r[c]) if c in r else "" for c in cols])
    return buf.getvalue()


def _mean(xs: Iterable[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def summary(rows: Sequence[Mapping[str, Any]], params: GraphParams = GraphParams()) -> dict[str, float]:
    """Model-level numbers of :func:`layer_table` rows for logging as metrics (keys match ``[a-z0-9_]+``).

    ``graph_D``: D under ``params``, where ``reference="init"`` takes the rows' ref columns.
    ``graph_layers``, ``graph_valid_layers``: row counts. ``graph_scored_layers``: the valid layers that count
    in D. ``graph_edges``, ``graph_density``: kept edges and their share over all rows.
    ``graph_ramanujan_gap_mean``: mean gap of ``params.variant`` over the valid layers that have one.
    ``graph_lambda_mean``, ``graph_sigma2_mean``: means over the valid layers. ``graph_imdb_mean``: only with
    ``params.nested``. A mean over no layers is NaN (the tracker drops NaN).
    """
    metrics = [LayerMetrics.from_row(r) for r in rows]
    init = None
    if params.reference == "init":
        keys = ("ref_gap", "ref_lambda") + (("ref_imdb",) if params.nested else ())
        missing = [r.get("name", "?") for r in rows if not all(k in r for k in keys)]
        if missing:
            raise ValueError(f"reference='init' needs the {', '.join(keys)} columns (missing in {', '.join(missing)})")
        init = {r["name"]: tuple(float(r[k]) for k in keys) for r in rows}
    terms = [_layer_term(lm, params, init) for lm in metrics]
    valid = [lm for lm in metrics if lm.valid]
    numel = sum(lm.n_left * lm.n_right for lm in metrics)
    edges = sum(lm.edges for lm in metrics)
    out = {
        "graph_D": sum(t for t in terms if not math.isnan(t)),
        "graph_layers": float(len(metrics)),
        "graph_valid_layers": float(len(valid)),
        "graph_scored_layers": float(sum(1 for t in terms if not math.isnan(t))),
        "graph_edges": float(edges),
        "graph_density": edges / numel if numel else math.nan,
        "graph_ramanujan_gap_mean": _mean(lm.gap(params.variant) for lm in valid),
        "graph_lambda_mean": _mean(lm.lam for lm in valid),
        "graph_sigma2_mean": _mean(lm.sigma2 for lm in valid),
    }
    if params.nested:
        out["graph_imdb_mean"] = _mean(lm.imdb(params.variant) for lm in valid)
    return out
