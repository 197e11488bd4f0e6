"""Transcription of the third-party PAGS sampler: Memoristor/WideTopo @ 5c0a9452, class ``PAGS_SNIP``
(``pruners/pags.py``) and its ``global_mask`` (``pruners/pruner.py``). Written from the code, rule by rule, each citing
its file and line; nothing here comes from ``harness``. The pruner's scaffolding (distributed ranks, the engine's
``predict_func`` / ``loss_func``, wandb) is left out: a batch is a dict ``{"image", "label"}``, the loss the
cross-entropy of the model's logits, and the caller sets the model's mode.

What the code does:

* ``compute_spectrum_l2`` (pags.py:121-153): a conv mask / weight is reshaped to ``(c_out, -1)``; the binary adjacency
  ``[[0, M^T], [M, 0]]`` gives ``Δr = 2 sqrt(d - 1) - μ̂`` with ``d`` the mean degree over all nodes and ``μ̂`` the
  second entry of the |eigenvalues| sorted descending (:52-83); the weighted adjacency of ``M * P`` gives
  ``λ = μ0 - μ̂`` of ``|W|`` (:86-118); both from a dense float32 ``eigvalsh``; the layer distance is the float32
  norm of ``(Δr, λ)``. The ±σ symmetry of a bipartite spectrum makes μ̂ = σ1 (pags.md defect 1): ``λ`` is 0
  up to round-off;
* ``custom_mask`` (pags.py:170-258): the first batch of ``cycle(dataloader)`` is the "last" batch; for each of
  ``population_size`` candidates, the next batch, then for every key of the batch dict its own ``randperm`` of
  last + current, the first ``len(last)`` kept (:194-200); SNIP scores ``|grad * param|`` of the dense model over
  their sum (:203-216); ``global_mask`` (:219); the distance summed over the prunable tensors with more than 1000
  kept entries and a density above 1e-3, conv (4-D) or fc (2-D), NaN layers skipped (:221-242); a candidate replaces
  the best only with a strictly larger distance (:244); the best masks are kept (:256-258);
* ``global_mask`` (pruner.py:73-98): ``k = int((1 - density) * N_all)``, ``N_all`` counting **every** model parameter,
  the threshold the (k+1)-th smallest score (``sorted[k]``), every score ``<=`` it pruned; ``tolerance`` only
  raises on excess ties.

Switches for the project's declared deviations (defaults = the code): ``sigma2_fix`` (μ̂ = the third |eigenvalue|,
σ2: ``pags_sigma2_fix``), ``shared_perm`` (one permutation for images and labels: ``pags_aligned_batch_mix``),
``k_rule="exact"`` (exactly ``round(d N_prunable)`` kept, ties to the lower index: ``pags_exact_k``). Fresh batches
(``pags_fresh_batches``) are what the caller's loader yields: an endless stream, which ``cycle`` passes through.
The caller gives the ``torch.Generator`` the code's ``randperm`` draws from the global RNG.

Numerics: the code calls ``torch.linalg.eigvalsh`` on the float32 adjacency. With this build's multithreaded MKL that
call returns NaN eigenvalues, or raises ``LinAlgError``, on some stage-4 masks of the small ResNet-34 (e.g. two NaN
of the 640 eigenvalues of a 64 x 576 mask with 2 threads, none with 1 thread); the code then skips the layer (:234-242).
That is a numerical accident, not a rule: :data:`EIG_DTYPE` (float32, the code) is set to float64 by the lockstep
tests, so both sides compute the rules' spectra reliably.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from itertools import cycle

import torch
from torch import nn
from torch.nn import functional as F

EIG_DTYPE = torch.float32  # the dtype of the dense eigvalsh (the code: .float(), pags.py:66, :97)


def build_adjacency_matrix_from_mask(M: torch.Tensor) -> torch.Tensor:
    """pags.py:18-31."""
    cin, cout = M.shape[1], M.shape[0]
    A = torch.zeros((cin + cout, cin + cout), dtype=torch.int64, device=M.device)
    A[:cin, cin:] = M.T
    A[cin:, :cin] = M
    return A


def build_weighted_adjacency_matrix(M: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """pags.py:34-49."""
    cout, cin = M.shape
    P_masked = M * P
    W = torch.zeros((cin + cout, cin + cout), dtype=P.dtype, device=P.device)
    W[:cin, cin:] = P_masked.T
    W[cin:, :cin] = P_masked
    return W


def _mu_hat(sorted_abs: torch.Tensor, sigma2_fix: bool):
    # pags.py:79 / :114 take sorted_abs[1] (= sigma_1 again); the declared fix takes sorted_abs[2] (= sigma_2)
    return sorted_abs[2] if sigma2_fix else sorted_abs[1]


def compute_ramanujan_gap(A: torch.Tensor, sigma2_fix: bool = False) -> float:
    """pags.py:52-83."""
    assert torch.allclose(A, A.T)
    A = A.float()
    degrees = A.sum(dim=1)
    d = degrees.mean()  # :67-68, over all nodes
    eigenvalues = torch.linalg.eigvalsh(A.to(EIG_DTYPE))
    sorted_abs, _ = torch.sort(torch.abs(eigenvalues), descending=True)
    mu_hat = 0.0 if sorted_abs.size(0) < 2 else _mu_hat(sorted_abs, sigma2_fix)
    return (2 * torch.sqrt(d - 1) - mu_hat).item()


def compute_weighted_spectral_gap(W: torch.Tensor, sigma2_fix: bool = False) -> float:
    """pags.py:86-118."""
    abs_W = torch.abs(W).float()
    eigenvalues = torch.linalg.eigvalsh(abs_W.to(EIG_DTYPE))
    sorted_magnitudes, _ = torch.sort(torch.abs(eigenvalues), descending=True)
    if sorted_magnitudes.size(0) < 2:
        return 0.0
    return (sorted_magnitudes[0] - _mu_hat(sorted_magnitudes, sigma2_fix)).item()


def compute_spectrum_l2(initial_weights: torch.Tensor, weight_mask: torch.Tensor, weight_type: str = "fc",
                        sigma2_fix: bool = False, parts: dict | None = None) -> torch.Tensor:
    """pags.py:121-153. ``parts`` (no part of the code) receives ``delta_r`` and ``lambda`` for the comparison."""
    if weight_type == "conv":
        cout = initial_weights.shape[0]
        weight_flat = initial_weights.view(cout, -1)
        mask_flat = weight_mask.view(cout, -1)
    else:
        weight_flat, mask_flat = initial_weights, weight_mask
    mask_adj = build_adjacency_matrix_from_mask(mask_flat)
    weight_adj = build_weighted_adjacency_matrix(mask_flat, weight_flat)
    delta_r = compute_ramanujan_gap(mask_adj, sigma2_fix)
    lambda_w = compute_weighted_spectral_gap(weight_adj, sigma2_fix)
    if parts is not None:
        parts["delta_r"], parts["lambda"] = delta_r, lambda_w
    return torch.norm(torch.tensor([delta_r, lambda_w], device=initial_weights.device), p=2)


def total_distance(masks: dict[str, torch.Tensor], params: dict[str, torch.Tensor], sigma2_fix: bool = False,
                   min_edges: int = 1000, layers: dict | None = None):
    """The candidate's distance, pags.py:221-242 (``min_edges`` is the code's 1000; ``layers`` collects each
    layer's parts for the comparison)."""
    total = 0
    for n, m in masks.items():
        p = params[n]
        try:
            isvalid = m.sum() > min_edges and m.sum() / m.numel() > 1e-3  # :226
            parts: dict = {}
            if n.endswith(".weight") and len(m.shape) == 4 and isvalid:
                distance = compute_spectrum_l2(p, m, "conv", sigma2_fix, parts)
            elif n.endswith(".weight") and len(m.shape) == 2 and isvalid:
                distance = compute_spectrum_l2(p, m, "fc", sigma2_fix, parts)
            else:
                distance = torch.tensor(0.0, device=m.device, dtype=torch.float32)
            if layers is not None and parts:
                layers[n] = {**parts, "distance": float(distance)}
            if not torch.isnan(distance):  # :234-238
                total += distance
        except torch._C._LinAlgError:  # :240-242
            pass
    return total


def global_mask(scores: dict[str, torch.Tensor], n_all: int, density: float, tolerance: float = 0.005,
                k_rule: str = "pags_snip") -> dict[str, torch.Tensor]:
    """``Pruner.global_mask`` (pruner.py:73-98) over ``scores``; ``n_all`` = every parameter of the model (:79).
    ``k_rule="exact"``: the declared rule, exactly ``round(density * N_prunable)`` kept, ties to the lower index."""
    global_scores = torch.cat([torch.flatten(v) for v in scores.values()])
    assert int(torch.isnan(global_scores).int().sum()) == 0
    if k_rule == "exact":
        keep = round(density * global_scores.numel())
        order = torch.argsort(global_scores.to(torch.float64), descending=True, stable=True)
        kept = torch.zeros(global_scores.numel(), dtype=torch.bool)
        kept[order[:keep]] = True
        out, start = {}, 0
        for name, s in scores.items():
            out[name] = kept[start:start + s.numel()].view(s.shape).float()
            start += s.numel()
        return out
    k = int((1.0 - density) * n_all)  # :80
    if k > 0:
        sorted_, _ = torch.sort(global_scores, descending=False)  # :84-85
        threshold = sorted_[k]
        num_pruned = (global_scores <= threshold).int().sum()
        if (k - num_pruned).abs() / global_scores.numel() > tolerance:  # :87-91
            raise AttributeError(f"{k} parameters should be pruned, but {int(num_pruned)} would be")
        return {name: torch.where(s <= threshold, 0.0, 1.0) for name, s in scores.items()}  # :92-95
    return {name: torch.ones_like(s) for name, s in scores.items()}


def _better(best_distance, total) -> bool:
    """pags.py:244: a strictly larger distance replaces the best; the first of equal distances stays."""
    return best_distance is None or best_distance < total


def pags_snip(model: nn.Module, param_names: list[str], dataloader: Iterable, density: float, population_size: int,
              generator: torch.Generator, *, sigma2_fix: bool = False, shared_perm: bool = False,
              k_rule: str = "pags_snip", min_edges: int = 1000, tolerance: float = 0.005,
              observe: Callable[[int, dict, float], None] | None = None) -> tuple[dict, float]:
    """``PAGS_SNIP.custom_mask`` (pags.py:170-258). ``dataloader`` yields ``(images, labels)``, turned into the
    code's batch dicts. ``observe(index, masks, distance)`` (no part of the code) sees every candidate."""
    params_dict = dict(model.named_parameters())  # :172, tools/utils.py:56-61
    n_all = sum(p.numel() for p in params_dict.values())
    best_mask, best_distance = None, None
    loader = cycle(dataloader)  # :177
    x, y = next(loader)  # :180-182
    last = {"image": x, "label": y}
    for i in range(population_size):  # :188-189
        x, y = next(loader)
        curr = {"image": x, "label": y}
        comb = {}
        perm = None
        for k, lv in last.items():  # :195-200
            v = torch.cat([lv, curr[k]], dim=0)
            if perm is None or not shared_perm:
                perm = torch.randperm(v.shape[0], generator=generator)
            comb[k] = v[perm[: lv.shape[0]]]
        model.zero_grad()  # :203-207
        L = F.cross_entropy(model(comb["image"]), comb["label"])
        L.backward()
        scores = {n: torch.clone(params_dict[n].grad * params_dict[n]).detach().abs_() for n in param_names}  # :209-211
        sum_score = sum([v.sum() for v in scores.values()])  # :214-216
        for s in scores.values():
            s.div_(sum_score)
        masks = global_mask(scores, n_all, density, tolerance, k_rule)  # :219
        distance = total_distance(masks, {n: params_dict[n].detach() for n in param_names}, sigma2_fix, min_edges)
        if observe is not None:
            observe(i, masks, float(distance))
        if _better(best_distance, distance):  # :244-246
            best_mask = copy.deepcopy(masks)
            best_distance = distance
        last = curr  # :249
    return best_mask, float(best_distance)
