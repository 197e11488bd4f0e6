"""Scores that need the model (and data): the pruning-at-initialisation family.

Each is registered in :data:`harness.pruning.scores.SCORES` (the catalog says what it needs); a procedure
supplies a :class:`~harness.pruning.scores.ScoreInputs` with those parts. Every score is computed
with the *masked* network in the forward pass (``m * w``), in the model's current mode, and the
dense weights are given back afterwards; entries are scored against the dense ``w``, so a
re-scoring over all entries (iterative SNIP) can bring a pruned entry back (pags.md 5.4).

The formulas follow the PAGS predecessor's pruners (VITA-Group/ramanujan-on-pai
``lib/prune/pruning_utils.py``, checked in lockstep by tests/reference/test_pai_reference.py),
including the order of their float sums where it is free:

* ``snip`` (Lee et al. 2019): ``|sum_b g_b * w|``, ``g_b`` the loss gradient of batch ``b`` of
  ``inputs.batches()`` (the code's mask gradient, accumulated batch by batch, :203-210); not
  normalised (the code divides by the global sum, :215-220: the same ranking);
* ``grasp`` (Wang et al. 2020): ``w * Hg`` from two passes, each over ``inputs.batches()`` (gradient
  ``g``, then the Hessian-gradient product by a second backward; whether the second call gives the
  first call's batches is the procedure's choice, :mod:`~harness.pruning.methods.at_init`), divided by
  ``|sum| + 1e-10`` (:231-271), with the temperature ``options["grasp_temperature"]`` applied to
  the logits, or after the log-softmax as the PAGS predecessor's code does (no effect on the ranking,
  pags.md defect 15) when ``options["grasp_temperature_on"] == "log_softmax"``; highest kept;
* ``synflow`` (Tanaka et al. 2020): data-free; every state tensor replaced by its absolute value, one
  all-ones input, ``R`` = the sum of the raw outputs (or of the log-softmax outputs,
  ``options["synflow_output"] == "log_softmax"``, pags.md defect 6), score ``|w * dR/dw|`` (:137-167);
* ``random``: i.i.d. scores from ``inputs.generator``: uniform in float64, or, with
  ``options["random_scores"] == "normal"``, standard normal in the weight's dtype, drawn tensor by
  tensor as the predecessor's ``Rand`` pruner draws ``randn_like`` (:185-187).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class ScoreInputs:
    """What a data-dependent score may ask for; the procedure fills what its scores declare.

    ``batches()`` yields ``(images, labels)`` on the model's device (a fresh iterator per call);
    ``loss`` maps (logits, labels) to a scalar; ``generator`` draws random scores; ``options``
    carries a score's own switches (e.g. GraSP's temperature), set by the procedure's parameters.
    """

    model: nn.Module
    params: dict[str, torch.Tensor]  # the prunable tensors, by name, in forward order
    masks: dict[str, torch.Tensor]  # their current bool masks
    batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]] | None = None
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    generator: torch.Generator | None = None
    options: dict = field(default_factory=dict)


@contextlib.contextmanager
def _masked(inputs: ScoreInputs):
    """The prunable weights hold m * w inside; the dense w (returned) is put back afterwards."""
    params = list(inputs.params.values())
    dense = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, name in zip(params, inputs.params):
            p.mul_(inputs.masks[name].to(p.dtype))
    try:
        yield dense
    finally:
        with torch.no_grad():
            for p, w in zip(params, dense):
                p.copy_(w)
        inputs.model.zero_grad(set_to_none=True)


def _grad_sum(inputs: ScoreInputs, loss_of) -> list[torch.Tensor]:
    params = list(inputs.params.values())
    grads = [torch.zeros_like(p) for p in params]
    for x, y in inputs.batches():
        inputs.model.zero_grad(set_to_none=True)
        loss_of(inputs.model(x), y).backward()
        for g, p in zip(grads, params):
            if p.grad is not None:
                g.add_(p.grad)
    return grads


def snip(inputs: ScoreInputs) -> list[torch.Tensor]:
    params = list(inputs.params.values())
    with _masked(inputs) as dense:
        acc = [torch.zeros_like(p) for p in params]
        for x, y in inputs.batches():  # g_b * w summed batch by batch, as the code's mask gradient accumulates
            inputs.model.zero_grad(set_to_none=True)
            inputs.loss(inputs.model(x), y).backward()
            for a, p, w in zip(acc, params, dense):
                if p.grad is not None:
                    a.add_(p.grad * w)
    return [a.abs() for a in acc]


def grasp(inputs: ScoreInputs) -> list[torch.Tensor]:
    temperature = float(inputs.options.get("grasp_temperature", 200.0))
    on_logits = inputs.options.get("grasp_temperature_on", "logits") == "logits"

    def loss_of(z, y):
        z = z / temperature if on_logits else F.log_softmax(z, 1) / temperature
        return F.cross_entropy(z, y) if on_logits else F.nll_loss(z, y)

    params = list(inputs.params.values())
    with _masked(inputs) as dense:
        g = [t.detach() for t in _grad_sum(inputs, loss_of)]
        inputs.model.zero_grad(set_to_none=True)
        for x, y in inputs.batches():  # Hg accumulates in .grad: d/dw (grad_w(L) . g)
            grad_w = torch.autograd.grad(loss_of(inputs.model(x), y), params, create_graph=True)
            sum((gw * gi).sum() for gw, gi in zip(grad_w, g)).backward()
        hg = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    scores = [w * h for w, h in zip(dense, hg)]
    norm = torch.cat([s.reshape(-1) for s in scores]).sum().abs() + 1e-10  # one sum over all entries, as the code
    return [s / norm for s in scores]


def synflow(inputs: ScoreInputs) -> list[torch.Tensor]:
    model = inputs.model
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = list(inputs.params.values())
    try:
        with torch.no_grad():
            for t in model.state_dict().values():
                if t.is_floating_point():
                    t.abs_()
            for p, name in zip(params, inputs.params):
                p.mul_(inputs.masks[name].to(p.dtype))
        model.zero_grad(set_to_none=True)
        first = params[0]
        x = torch.ones(1, *inputs.options.get("input_shape", (3, 32, 32)), device=first.device, dtype=first.dtype)
        out = model(x)
        if inputs.options.get("synflow_output", "raw") == "log_softmax":
            out = F.log_softmax(out, 1)
        out.sum().backward()
        scores = [(p.grad * p.detach()).abs() if p.grad is not None else torch.zeros_like(p) for p in params]
    finally:
        model.load_state_dict(state)  # signs, dense weights and BN statistics back
        model.zero_grad(set_to_none=True)
    return scores


def random(inputs: ScoreInputs) -> list[torch.Tensor]:
    if inputs.options.get("random_scores", "uniform") == "normal":
        return [torch.randn(p.shape, generator=inputs.generator, device=p.device, dtype=p.dtype)
                for p in inputs.params.values()]
    return [torch.rand(p.shape, generator=inputs.generator, device=p.device, dtype=torch.float64)
            for p in inputs.params.values()]
