"""Choosing a mask at initialisation (the toolkit side of the ``at_init`` procedure): on the freshly initialised
model, before the sparse network trains with the mask held fixed (SNIP, iterative SNIP, GraSP, SynFlow, random, ERK;
DPF's SNIP baseline; the PAGS paper's baselines).

The rules are the PAGS predecessor's ``prune_loop`` and pruners (VITA-Group/ramanujan-on-pai
``main.py:45-64``, ``lib/prune/pruning_utils.py``), checked in lockstep by
tests/reference/test_pai_reference.py:

* the score (a registered score: it declares what it needs) is computed on ``batches`` training
  mini-batches drawn from the run's seed (``null``: one full pass over the training split), with
  the model in ``mode``;
* over ``rounds`` rounds, round ``r`` re-scores every entry against the initial weights, with the
  network masked by round ``r - 1`` in the forward pass, and keeps ``density^(r/rounds)`` of the
  prunable set (pags.md 5.4: iterative SNIP and SynFlow use 100), so a pruned entry can come back;
  the pruned weights are zeroed once, after the last round;
* every round draws fresh batches (the code iterates its shuffling loader once per round); GraSP's
  two passes of one round take the same mini-batches (``batches: n``: drawn once, replayed) or two
  passes over the whole split (``null``: reshuffled and re-augmented, as the code iterates its loader
  twice);
* ``draw: topk`` keeps, each round, exactly ``round(density^(r/rounds) * N)`` entries, ties by index
  (``k_rule: round``), or what the code's ``_global_mask`` keeps (``k_rule: iclr23``,
  ``lib/prune/pruning_utils.py:58-76``): with ``k = int((1 - (1 - density^(r/rounds))) * N)``, the
  entries whose score is strictly above the k-th largest score, that is ``k - 1`` entries without
  ties and fewer with ties at the threshold (entries with a zero score, e.g. the outer taps of 3x3
  convs on a 1x1 map, are all pruned while the threshold is 0); the masks stay as they are when
  ``k < 1``; SNIP scores are divided by their global sum first, as the code does (the same ties);
* ``draw: bernoulli`` keeps every entry independently with its layer's probability (``erk``: the
  code's ERK probabilities, :func:`~harness.pruning.allocation.erk_probabilities`, drawn layer by
  layer from the run's generator; the density is met in expectation, and the realised one is what
  the rows report);
* the ``random`` score draws standard normal scores, as the code's ``Rand``.

Rows are on the ``epoch`` axis.

PAGS (pags.md 4, the PAGS_SNIP reading) is this procedure with ``candidates > 1``: each candidate
mask is chosen by the base score on one fresh mini-batch mixed from the previous and the current
training batch (one permutation shared by images and labels, the first batch-size entries kept),
selected exactly to the density whatever ``k_rule`` says (deviation pags_exact_k), and scored by its
mask-graph distance ``D`` (:mod:`harness.pruning.graph`, switches in ``graph``) with the initial
weights as edge weights; the candidate with the largest ``D`` is trained; of equal distances the
first is kept (:func:`_improves`). A random base draws a new mask per candidate. Checked in lockstep
against PAGS_SNIP (WideTopo ``pruners/pags.py``) by tests/reference/test_graph_reference.py.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from harness.data.device import DeviceData
from harness.pruning import graph, scores
from harness.pruning.allocation import ALLOCATIONS, erk_probabilities, target_rate
from harness.pruning.masks import MaskSet
from harness.pruning.steps import ChooseAtInit

__all__ = ["choose"]


def _score_options(p) -> dict:
    """The switches of the scores that have them (GraSP, SynFlow; random: normal scores, as the
    predecessor's ``Rand`` pruner, ``lib/prune/pruning_utils.py:185-187``)."""
    return {"grasp_temperature": p.grasp_temperature, "grasp_temperature_on": p.grasp_temperature_on,
            "synflow_output": p.synflow_output, "random_scores": "normal"}


def _improves(dist: float, best: float | None) -> bool:
    """PAGS keeps a candidate only if its distance is strictly larger than the best so far, so of
    equal distances the first is kept (WideTopo ``pruners/pags.py:244``)."""
    return best is None or dist > best


def _round_batches(draw, gen: torch.Generator, replay: bool):
    """The ``batches()`` of one scoring round. The first call draws from ``gen``; a later call (GraSP's
    second pass) replays the same mini-batches when ``replay``, or else draws a fresh pass from ``gen``,
    as the predecessor's code iterates its shuffling loader again (``lib/prune/pruning_utils.py:235,
    248``)."""
    start = None

    def batches():
        nonlocal start
        if start is None:
            start = gen.get_state()
            return draw(gen)
        if not replay:
            return draw(gen)
        again = torch.Generator(device=gen.device)
        again.set_state(start)
        return draw(again)

    return batches


def choose(choice: ChooseAtInit, model: nn.Module, masks: MaskSet, data: DeviceData, gen: torch.Generator,
           batch_size: int, drop_last: bool) -> dict:
    """Score and select, round after round (all entries eligible each time); with candidates,
    PAGS. Returns what the choice measured (PAGS: every candidate's distance, the chosen one)."""
    p, density = choice.params, choice.density
    if p.candidates > 1:
        return _pags(choice, model, masks, data, gen, batch_size)

    def draw(g: torch.Generator):
        if p.batches is None:  # one pass over the (shuffled) training split, partial last batch kept
            return data.train_batches(g, batch_size, drop_last=False)
        return (b for _, b in zip(range(p.batches), data.train_batches(g, batch_size, drop_last)))

    options = _score_options(p)
    model.train(p.mode == "train")
    try:
        for r in range(1, p.rounds + 1):
            # built every round: the inputs hold the current masks (round r scores the network masked by
            # round r - 1, main.py:61-64), and fresh batches
            inputs = masks.score_inputs(model, batches=_round_batches(draw, gen, replay=p.batches is not None),
                                        loss=F.cross_entropy, generator=gen, options=options)
            if p.draw == "bernoulli":
                _bernoulli(masks, lambda: scores.compute(choice.score, inputs), choice.allocation, density, gen)
            else:  # every round re-scores all entries against the initial weights (pruned ones can return)
                _select(masks, choice, scores.compute(choice.score, inputs), density ** (r / p.rounds))
        masks.apply_()  # the pruned initial weights are zeroed once, after the last round
    finally:
        model.train()
        model.zero_grad(set_to_none=True)
    return {}

def _pags(choice: ChooseAtInit, model: nn.Module, masks: MaskSet, data: DeviceData, gen: torch.Generator,
          batch_size: int) -> dict:
    p, density = choice.params, choice.density

    def stream():  # fresh, reshuffled batches (pags.md defect 12)
        while True:
            yield from data.train_batches(gen, batch_size, drop_last=True)

    batches = stream()
    weights = {n: w.detach().clone() for n, w in masks.params.items()}  # theta_0: the edge weights
    init_coords = graph.reference_coordinates(weights, p.graph) if p.graph.reference == "init" else None
    options = _score_options(p)
    ones = {n: torch.ones_like(m) for n, m in masks.masks.items()}
    distances: list[float] = []
    best = None
    prev = next(batches)
    model.train(p.mode == "train")
    try:
        for _ in range(p.candidates):
            cur = next(batches)
            x, y = torch.cat([prev[0], cur[0]]), torch.cat([prev[1], cur[1]])
            # the first len(prev) of one permutation (pruners/pags.py:196-200), shared by images and labels
            # (defect 11)
            keep = torch.randperm(x.shape[0], generator=gen, device=x.device)[: prev[0].shape[0]]
            mixed = (x[keep], y[keep])
            masks.set_masks_(ones)
            inputs = masks.score_inputs(model, batches=lambda b=mixed: iter([b]), loss=F.cross_entropy,
                                        generator=gen, options=options)
            if p.draw == "bernoulli":
                _bernoulli(masks, lambda: scores.compute(choice.score, inputs), choice.allocation, density, gen)
            else:
                masks.select_(scores.compute(choice.score, inputs), choice.allocation, density=density,
                              eligible="all")
            with torch.no_grad():  # back to theta_0 for the next candidate
                for n, w in masks.params.items():
                    w.copy_(weights[n])
            dist = graph.distance(weights, masks.masks, params=p.graph, init_coordinates=init_coords)
            if _improves(dist, None if best is None else distances[best[0]]):
                best = (len(distances), {n: m.clone() for n, m in masks.masks.items()})
            distances.append(dist)
            prev = cur
    finally:
        model.train()
        model.zero_grad(set_to_none=True)
    masks.set_masks_(best[1])
    masks.apply_()
    return {"pags_distances": distances, "pags_chosen": best[0]}

def _select(masks: MaskSet, choice: ChooseAtInit, s: list[torch.Tensor], density: float) -> dict[str, int]:
    """One round's top-k selection over all entries at ``density`` (module docstring: ``k_rule``)."""
    if choice.params.k_rule == "round":
        return masks.select_(s, choice.allocation, density=density, eligible="all")
    if choice.allocation != "global":
        raise ValueError(f"k_rule: iclr23 is the predecessor's global threshold; got allocation "
                         f"{choice.allocation!r}")
    if choice.score == "snip":  # the code ranks SNIP scores over their global sum (:215-220): the same ties
        norm = torch.sum(torch.cat([torch.flatten(t) for t in s]))
        s = [t / norm for t in s]
    flat = torch.cat([torch.flatten(t) for t in s])
    k = int((1 - (1 - density)) * flat.numel())  # :69, with main.py:63's sparsity 1 - d^(r/R)
    if k < 1:  # :70: the masks stay as they are
        return {"pruned": 0, "regrown": 0}
    threshold = flat.topk(k)[0][-1]  # :71, the k-th largest score
    new = {n: ~(t <= threshold) for n, t in zip(masks.params, s)}  # :72-76: score <= threshold is masked
    stats = {"pruned": sum(int((o & ~new[n]).sum()) for n, o in masks.masks.items()),
             "regrown": sum(int((new[n] & ~o).sum()) for n, o in masks.masks.items())}
    masks.set_masks_(new)
    return stats

def _bernoulli(masks: MaskSet, score, allocation: str, density: float, gen) -> None:
    """Keep every entry independently with its layer's probability, one ``rand`` draw per layer in
    forward order (``lib/prune/pruning_utils.py:361-369``). ``erk``: the predecessor's ERK
    probabilities (no scores computed, nothing else drawn); another allocation: its counts over the
    layer sizes (``score()`` computes the scores it ranks)."""
    layers = masks.layers("all")
    if allocation == "erk":
        probs = erk_probabilities([tuple(l.weight.shape) for l in layers], density)
    else:
        counts = ALLOCATIONS[allocation](layers, score(), target_rate(layers, density))
        probs = [k / l.original_numel for l, k in zip(layers, counts)]
    new = {n: torch.rand(l.weight.shape, generator=gen, device=l.weight.device) < q
           for n, l, q in zip(masks.params, layers, probs)}
    masks.set_masks_(new)
    masks.apply_()
