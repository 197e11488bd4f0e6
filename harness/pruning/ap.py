"""AP's activation step and a cycle's pruning (the toolkit side of the ``cycles`` procedure, ap.md 2.1-2.2), and
the densities AP reports every cycle.

:func:`prune_cycle` is one cycle's pruning for any base method: ``n_ap`` counted first, the base method's step
through the shared score -> allocation -> mask pipeline (or the counts of a base step that already happened, a DPF
decision training), then, with ``ap_rate > 0``, :func:`ap_step`. Checked in lockstep against a transcription of
Martin1937/Activate-While-Pruning in tests/reference/test_ap_reference.py.
"""

from __future__ import annotations

import csv
import io
import math

import torch
from torch import nn

from harness.pruning.masks import MaskSet, prunable_parameters

__all__ = ["ap_step", "prune_cycle", "densities", "layer_masks", "masked_nonzero", "epochs_csv", "EPOCH_COLUMNS"]


@torch.no_grad()
def ap_step(masks: MaskSet, reference: dict[str, torch.Tensor], n_ap: int) -> tuple[dict, dict[str, torch.Tensor]]:
    """AP's activation step (ap.md 2.1) on the current weights theta_T of ``masks``: among the unmasked entries with
    theta_T < 0, mask the ``n_ap`` with the smallest ``|theta_T - reference|``; ties go to the lower flat index in
    forward order. With fewer candidates than ``n_ap`` all of them are removed (``ap_guarded``). Returns the counts
    and the entries it removed (name -> bool tensor).

    Reference (Martin1937/Activate-While-Pruning resnet_20.py:337-392): candidates are the alive entries that are
    negative after the base step (:364), the movement is measured against the state taken at the start of this
    cycle's first training (:172, :351-352), and the code masks every candidate whose movement is ``<=`` the value at
    0-based index ``n_ap`` of the sorted movements (:369, :385): ``n_ap + 1`` entries plus ties, IndexError when
    there are ``<= n_ap`` candidates. Exactly ``n_ap`` and the guard are deviations ``ap_exact_n_ap`` and
    ``ap_guard_ap_step``."""
    names = list(masks.params)
    theta = torch.cat([masks.params[n].detach().reshape(-1) for n in names])
    alive = torch.cat([masks.masks[n].reshape(-1) for n in names])
    ref = torch.cat([reference[n].detach().reshape(-1).to(theta) for n in names])
    cand = alive & (theta < 0)
    n_cand = int(cand.sum())
    k = min(n_ap, n_cand)
    inf = torch.full_like(theta, math.inf, dtype=torch.float64)
    delta = torch.where(cand, (theta - ref).abs().to(torch.float64), inf)
    removed = torch.zeros_like(alive)
    removed[torch.argsort(delta, stable=True)[:k]] = True
    new, gone, start = {}, {}, 0
    for n in names:
        size = masks.masks[n].numel()
        r = removed[start:start + size].reshape(masks.masks[n].shape)
        new[n], gone[n] = masks.masks[n] & ~r, r
        start += size
    masks.set_masks_(new)
    masks.apply_()
    stats = {"ap_candidates": n_cand, "ap_removed": k, "ap_guarded": float(n_cand < n_ap)}
    return stats, gone


def prune_cycle(masks: MaskSet, score: str, allocation: str, base_rate: float, ap_rate: float,
                reference: dict[str, torch.Tensor], base_done: dict | None = None,
                alive_before: int | None = None, inputs=None) -> tuple[dict, dict[str, torch.Tensor]]:
    """One cycle's pruning for any base method: ``n_ap`` counted first, the base step through the shared
    score -> allocation -> mask pipeline, then (``ap_rate > 0``) :func:`ap_step`. ``base_done``: the base step
    already happened during the decision training (DPF, its counts; ``alive_before`` the count before it). Returns
    the counts and the entries the AP step removed. ``inputs``: what a base score that needs more than the weights
    reads (:class:`~harness.pruning.scores.ScoreInputs`)."""
    # resnet_20.py:302-313, 332: n_ap = int(size of the alive pool * rate), the pool collected before the base step
    alive = alive_before if base_done is not None else sum(a for a, _ in masks.counts().values())
    n_ap = int(ap_rate * alive)
    base = base_done if base_done is not None else {"base_pruned": masks.prune_(score, allocation, base_rate, inputs)["pruned"]}
    stats = {"alive_before": alive, "n_ap": n_ap, **base}
    gone: dict[str, torch.Tensor] = {}
    if ap_rate > 0:
        ap, gone = ap_step(masks, reference, n_ap)
        stats.update(ap)
    else:
        stats.update(ap_candidates=0, ap_removed=0, ap_guarded=0.0)
    stats["pruned_fraction"] = (stats["base_pruned"] + stats["ap_removed"]) / max(alive, 1)
    return stats, gone


def densities(model: nn.Module, masks: MaskSet) -> dict:
    """Mask densities over the maskable set, over every conv + linear weight and over all parameters (ap.md 7,
    item 9: from the mask, so a weight that is 0 but unmasked counts as present); entries outside the mask count as
    present."""
    def alive(name: str, p: torch.Tensor) -> int:
        return int(masks.masks[name].sum()) if name in masks.masks else p.numel()

    cl = prunable_parameters(model, "conv_and_linear_weights")
    named = dict(model.named_parameters())
    return {"density_maskable": masks.density(),
            "density_conv_linear": sum(alive(n, p) for n, p in cl.items()) / sum(p.numel() for p in cl.values()),
            "density_all_params": sum(alive(n, p) for n, p in named.items()) / sum(p.numel() for p in named.values())}


def layer_masks(masks: MaskSet) -> MaskSet:
    """The masks of the weights with >= 2 dims (conv, linear): the mask-graph metrics' layers (BN gamma is no layer
    of the graph)."""
    names = [n for n, p in masks.params.items() if p.dim() >= 2]
    return MaskSet({n: masks.params[n] for n in names}, {n: masks.masks[n] for n in names})


def masked_nonzero(masks: MaskSet) -> int:
    """Masked entries whose weight is not exactly 0 (0 when the mask is enforced)."""
    return sum(int(((~m) & (masks.params[n].detach() != 0)).sum()) for n, m in masks.masks.items())


EPOCH_COLUMNS = ("test_acc", "test_loss", "train_acc", "train_loss", "dead_neuron_rate", "train_dnr")


def epochs_csv(rows: list[dict]) -> str:
    """Every recorded retraining's per-epoch metrics: one line per (cycle, epoch); the harness-defined post-training
    dead-neuron rate on the test set overall and per ReLU site (``dead_neuron_rate``, ``dnr/<module>``), then the
    paper's dynamic DNR over that epoch's training batches (``train_dnr``, ``train_dnr/<module>``)."""
    lines = [(r["index"], e) for r in rows if r["axis"] == "round" for e in r.get("epochs", [])]
    sites = list(lines[0][1].get("dnr_layers", {})) if lines else []
    train_sites = list(lines[0][1].get("train_dnr_layers", {})) if lines else []
    nan = float("nan")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["cycle", "epoch", "steps", *EPOCH_COLUMNS, *(f"dnr/{s}" for s in sites),
                *(f"train_dnr/{s}" for s in train_sites)])
    for k, e in lines:
        w.writerow([k, e["epoch"], e["steps"], *(f"{e.get(c, nan):.6f}" for c in EPOCH_COLUMNS),
                    *(f"{e['dnr_layers'][s]:.6f}" for s in sites),
                    *(f"{e.get('train_dnr_layers', {}).get(s, nan):.6f}" for s in train_sites)])
    return buf.getvalue()
