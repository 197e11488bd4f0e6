"""Scores that need the model and data (pruning-at-initialisation family).

Each is registered in :data:`harness.pruning.scores.SCORES` with what it needs; a procedure
supplies a :class:`~harness.pruning.scores.ScoreInputs` with those parts.

* ``snip`` (Lee et al. 2019): ``|g ⊙ w|`` with ``g`` the gradient of the loss summed over the
  batches ``inputs.batches()`` yields, on the masked weights, in the model's current mode;
* ``random``: i.i.d. uniform scores from ``inputs.generator`` (random pruning).
"""

from __future__ import annotations

import torch

from harness.pruning.scores import Score, ScoreInputs, register


def snip(inputs: ScoreInputs) -> list[torch.Tensor]:
    params = list(inputs.params.values())
    grads = [torch.zeros_like(p) for p in params]
    with torch.no_grad():
        for p, name in zip(params, inputs.params):
            p.mul_(inputs.masks[name].to(p.dtype))
    for x, y in inputs.batches():
        inputs.model.zero_grad(set_to_none=True)
        inputs.loss(inputs.model(x), y).backward()
        for g, p in zip(grads, params):
            if p.grad is not None:
                g.add_(p.grad)
    inputs.model.zero_grad(set_to_none=True)
    return [(g * p.detach()).abs() for g, p in zip(grads, params)]


def random(inputs: ScoreInputs) -> list[torch.Tensor]:
    return [torch.rand(p.shape, generator=inputs.generator, device=p.device, dtype=torch.float64)
            for p in inputs.params.values()]


register(Score("snip", frozenset({"batches", "gradients"}), compute=snip,
               description="SNIP |g * w| (Lee et al. 2019)"))
register(Score("random", frozenset({"rng"}), compute=random, description="uniform random scores"))
