"""First-order Taylor importance (Molchanov et al., CVPR 2019): the score of a weight is ``|w * dL/dw|``, the
gradient summed over a few training mini-batches. One score, registered with prunebench's plugin API (version 1);
the overlays in ../overlays/ run it under each paper's protocol: LAMP's iterative rounds, DPF's one-shot pruning to
a target, AP's cycles, PAGS's pruning at initialisation."""

from __future__ import annotations

import torch

from harness import plugins

plugins.require(1)

__version__ = "0.1.0"


def taylor(inputs) -> list[torch.Tensor]:
    """``|w * g|`` per prunable tensor, ``g`` the gradient of the loss summed over ``inputs.batches()``, taken at
    the effective weights (masked entries are 0, so they score 0)."""
    params = list(inputs.params.values())
    grads = [torch.zeros_like(p) for p in params]
    for x, y in inputs.batches():
        loss = inputs.loss(inputs.model(x), y)
        for g, d in zip(grads, torch.autograd.grad(loss, params)):
            g += d
    return [(p.detach() * g).abs() for p, g in zip(params, grads)]


plugins.register_score("taylor", taylor, needs={"model", "batches", "gradients"},
                       description="first-order Taylor |w * dL/dw| over a few batches (Molchanov et al. 2019)")
