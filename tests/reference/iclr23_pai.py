"""Transcription of the PAGS predecessor's pruning at initialisation: VITA-Group/ramanujan-on-pai @ ec1d583e
(the "ICLR'23 code"), its pruners (``lib/prune/pruning_utils.py``, derived from Synaptic-Flow) and its prune loop
(``main.py``). Written from the code, rule by rule; every rule cites its file and line. Nothing here comes from
``harness``.

What the code does, and what this module keeps of it:

* masks are ``torch.nn.utils.prune.CustomFromMask`` re-parametrisations of every Conv2d and Linear weight
  (``lib/prune/pruning_utils.py:38-46``): the forward uses ``weight_orig * weight_mask``, and ``weight_orig`` (the
  initial weights) is never zeroed while the loop runs, so a pruned entry keeps its initial value;
* the model's output passes through a log-softmax forward hook and the loss is NLL (``common_models/utils.py:80-85``;
  ``main.py:378, 396``);
* ``prune_loop`` (``main.py:45-64``) puts the model in eval mode (``train_mode=False``), then for ``epochs`` rounds:
  score, then mask to ``sparse = 1 - density ** ((epoch + 1) / epochs)``; iterSNIP and SynFlow run 100 rounds, the
  others 1 (``main.py:67-79``);
* ``_global_mask`` (``lib/prune/pruning_utils.py:58-76``): ``k = int((1 - sparse) * N)`` over every score, threshold =
  the k-th largest score, every entry with ``score <= threshold`` masked, the others kept, so ``k - 1`` entries are
  kept when the k-th score is not tied (fewer with ties); with ``k < 1`` the masks stay as they are. Masked entries are
  not forced to -inf (:61-64 commented out): every round re-ranks every entry.

The caller supplies what the code takes from its globals: the data loader (any iterable of ``(x, y)``; the code's
shuffling loader gives a fresh pass each time it is iterated) and a ``torch.Generator`` for Rand's and ERK's draws
(the code draws them from the global RNG).

Switches for the project's declared deviations (defaults = the code):

* ``keep="round_topk"`` in :meth:`Pruner.mask`: keep exactly ``round((1 - sparse) * N)`` entries, the highest scores,
  ties to the lower index in the concatenation order (the project's rule);
* GraSP ``temperature_on="logits"``: the temperature divides the logits before the log-softmax (the code divides
  the log-softmax output, :237, 250, so it has no effect on the ranking);
* SynFlow ``output="raw"``: ``R`` sums the raw outputs (the code's hook makes it the log-softmax output).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.utils.prune as tprune
from torch import nn
from torch.nn import functional as F


class LogSoftmaxHook:
    """``add_log_softmax`` (``common_models/utils.py:80-85``): a forward hook on the model that returns
    ``log_softmax(output)`` (the implicit dim of a 2-D output is 1). ``logit_divisor`` (1 in the code) divides the
    output before the log-softmax, for the intended GraSP; ``enabled=False`` passes the raw output through."""

    def __init__(self, model: nn.Module):
        self.logit_divisor = 1.0
        self.enabled = True
        self.handle = model.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        if not self.enabled:
            return output
        if self.logit_divisor != 1.0:
            output = output / self.logit_divisor
        return F.log_softmax(output, dim=1)


def masked_parameters(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(weight_mask, weight_orig)`` of every Conv2d and Linear, in ``model.modules()`` order, after an all-ones
    ``CustomFromMask`` (``lib/prune/pruning_utils.py:38-46``)."""
    out = []
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            tprune.CustomFromMask.apply(module, "weight", torch.ones_like(module.weight))
            out.append((module.weight_mask, module.weight_orig))
    return out


class Pruner:
    """``Pruner`` (``lib/prune/pruning_utils.py:49-129``): scores by ``id(param)`` in masked-parameter order."""

    def __init__(self, masked: list[tuple[torch.Tensor, torch.Tensor]]):
        self.masked_parameters = list(masked)
        self.scores: dict[int, torch.Tensor] = {}

    def score(self, model, loss, dataloader, device) -> None:
        raise NotImplementedError

    def mask(self, sparsity: float, scope: str = "global", keep: str = "iclr23") -> None:
        """``mask`` -> ``_global_mask`` (:90-96, :58-76). ``keep="round_topk"``: the project's declared rule."""
        assert scope == "global"
        global_scores = torch.cat([torch.flatten(v) for v in self.scores.values()])  # :67-68
        if keep == "iclr23":
            k = int((1 - sparsity) * global_scores.numel())  # :69
            if not k < 1:  # :70
                threshold = global_scores.topk(k)[0][-1]  # :71, the k-th largest score
                for mask, param in self.masked_parameters:  # :72-76
                    score = self.scores[id(param)]
                    zero = torch.tensor([0.0]).to(mask.device)
                    one = torch.tensor([1.0]).to(mask.device)
                    mask.copy_(torch.where(score <= threshold, zero, one))
        elif keep == "round_topk":
            k = round((1 - sparsity) * global_scores.numel())
            order = torch.argsort(global_scores.to(torch.float64), descending=True, stable=True)
            kept = torch.zeros(global_scores.numel(), dtype=torch.bool)
            kept[order[:k]] = True
            start = 0
            for mask, param in self.masked_parameters:
                n = mask.numel()
                mask.copy_(kept[start:start + n].view(mask.shape).to(mask.dtype))
                start += n
        else:
            raise ValueError(keep)

    def stats(self) -> tuple[int, int]:
        """(remaining, total) prunable entries (:122-129)."""
        return (int(sum(float(m.sum()) for m, _ in self.masked_parameters)),
                sum(m.numel() for m, _ in self.masked_parameters))


class SNIP(Pruner):
    """``SNIP.score`` (:196-220): ``|dL/dm|`` accumulated over every batch of the loader, over the global sum."""

    def score(self, model, loss, dataloader, device) -> None:
        for m, _ in self.masked_parameters:  # :199-200
            m.requires_grad = True
        for data, target in dataloader:  # :203-206
            data, target = data.to(device), target.to(device)
            output = model(data)
            loss(output, target).backward()
        for m, p in self.masked_parameters:  # :209-213
            self.scores[id(p)] = torch.clone(m.grad).detach().abs_()
            p.grad.data.zero_()
            m.grad.data.zero_()
            m.requires_grad = False
        all_scores = torch.cat([torch.flatten(v) for v in self.scores.values()])  # :216-220
        norm = torch.sum(all_scores)
        for _, p in self.masked_parameters:
            self.scores[id(p)].div_(norm)


class GraSP(Pruner):
    """``GraSP.score`` (:224-271): temperature 200, eps 1e-10; pass 1 the gradient over the loader, pass 2 the
    Hessian-gradient product over the loader (iterated again); score ``Hg * theta`` over ``|sum| + eps``."""

    def __init__(self, masked, hook: LogSoftmaxHook, temperature_on: str = "log_softmax"):
        super().__init__(masked)
        self.temp = 200  # :228
        self.eps = 1e-10  # :229
        self.hook = hook
        self.temperature_on = temperature_on

    def _out(self, model, data):
        if self.temperature_on == "log_softmax":
            return model(data) / self.temp  # :237, 250: the hook's log-softmax output divided
        self.hook.logit_divisor = self.temp  # declared deviation: log_softmax(z / T)
        try:
            return model(data)
        finally:
            self.hook.logit_divisor = 1.0

    def score(self, model, loss, dataloader, device) -> None:
        params = [p for (_, p) in self.masked_parameters]
        stopped_grads = 0
        for data, target in dataloader:  # :235-245
            data, target = data.to(device), target.to(device)
            L = loss(self._out(model, data), target)
            grads = torch.autograd.grad(L, params, create_graph=False)
            stopped_grads += torch.cat([g.reshape(-1) for g in grads if g is not None])
        for data, target in dataloader:  # :248-259
            data, target = data.to(device), target.to(device)
            L = loss(self._out(model, data), target)
            grads = torch.autograd.grad(L, params, create_graph=True)
            flatten_grads = torch.cat([g.reshape(-1) for g in grads if g is not None])
            gnorm = (stopped_grads * flatten_grads).sum()
            gnorm.backward()
        for _, p in self.masked_parameters:  # :262-264
            self.scores[id(p)] = torch.clone(p.grad * p.data).detach()
            p.grad.data.zero_()
        all_scores = torch.cat([torch.flatten(v) for v in self.scores.values()])  # :267-271
        norm = torch.abs(torch.sum(all_scores)) + self.eps
        for _, p in self.masked_parameters:
            self.scores[id(p)].div_(norm)


class SynFlow(Pruner):
    """``SynFlow.score`` (:137-167): every state-dict tensor to its absolute value (signs kept), one all-ones input
    shaped like one image of the loader's first batch, ``sum(output).backward()``, score ``|theta_orig.grad *
    theta_orig|``, signs restored."""

    def __init__(self, masked, hook: LogSoftmaxHook, output: str = "log_softmax"):
        super().__init__(masked)
        self.hook = hook
        self.output = output

    def score(self, model, loss, dataloader, device) -> None:
        with torch.no_grad():  # linearize, :139-146
            signs = {}
            for name, param in model.state_dict().items():
                signs[name] = torch.sign(param)
                param.abs_()
        data, _ = next(iter(dataloader))  # :156-159
        input_dim = list(data[0, :].shape)
        inp = torch.ones([1] + input_dim).to(device)
        self.hook.enabled = self.output == "log_softmax"  # declared deviation "raw": the hook bypassed
        try:
            output = model(inp)  # :160
        finally:
            self.hook.enabled = True
        torch.sum(output).backward()  # :161
        for _, p in self.masked_parameters:  # :163-165
            self.scores[id(p)] = torch.clone(p.grad * p).detach().abs_()
            p.grad.data.zero_()
        with torch.no_grad():  # nonlinearize, :148-152
            for name, param in model.state_dict().items():
                param.mul_(signs[name])


class Rand(Pruner):
    """``Rand.score`` (:185-187): ``randn_like`` of every weight (from ``generator``, the code: the global RNG)."""

    def __init__(self, masked, generator: torch.Generator):
        super().__init__(masked)
        self.generator = generator

    def score(self, model, loss, dataloader, device) -> None:
        for _, p in self.masked_parameters:
            self.scores[id(p)] = torch.randn(p.shape, generator=self.generator, dtype=p.dtype, device=p.device)


class ERK(Pruner):
    """``ERK`` (:291-370): no score; ``mask`` solves the ERK probabilities (layers whose probability would exceed 1
    made dense, all layers at the maximum raw probability at once) and draws one Bernoulli mask per layer."""

    def __init__(self, masked, generator: torch.Generator):
        super().__init__(masked)
        self.generator = generator
        self.density_dict: dict[int, float] = {}

    def score(self, *args, **kwargs) -> None:  # :305-306
        pass

    def mask(self, sparsity: float, scope: str | None = None, keep: str = "iclr23") -> None:
        is_epsilon_valid = False  # :314-357
        erk_power_scale = 1.0
        dense_layers: set[int] = set()
        density = 1 - sparsity
        while not is_epsilon_valid:
            divisor = 0
            rhs = 0
            raw_probabilities = {}
            for name, (mask, params) in enumerate(self.masked_parameters):
                n_param = np.prod(params.shape)
                n_zeros = n_param * (1 - density)
                n_ones = n_param * density
                if name in dense_layers:
                    rhs -= n_zeros
                else:
                    rhs += n_ones
                    raw_probabilities[name] = (np.sum(mask.shape) / np.prod(mask.shape)) ** erk_power_scale
                    divisor += raw_probabilities[name] * n_param
            epsilon = rhs / divisor
            max_prob = np.max(list(raw_probabilities.values()))
            max_prob_one = max_prob * epsilon
            if max_prob_one > 1:
                is_epsilon_valid = False
                for mask_name, mask_raw_prob in raw_probabilities.items():
                    if mask_raw_prob == max_prob:
                        dense_layers.add(mask_name)
            else:
                is_epsilon_valid = True
        self.density_dict = {}
        for name, (mask, params) in enumerate(self.masked_parameters):  # :361-370
            if name in dense_layers:
                self.density_dict[name] = 1.0
            else:
                self.density_dict[name] = epsilon * raw_probabilities[name]
            mask.data.copy_((torch.rand(mask.shape, generator=self.generator) < self.density_dict[name]).float())


def prune_loop(model: nn.Module, loss: Callable, pruner: Pruner, dataloader: Iterable, device, density: float,
               scope: str, epochs: int, train_mode: bool = False, keep: str = "iclr23",
               observe: Callable[[int, Pruner], None] | None = None) -> None:
    """``prune_loop`` (``main.py:45-64``). ``observe(round, pruner)`` (1-based) is called after every round's mask,
    for the lockstep comparison; it is no part of the code."""
    model.train()  # :56-58
    if not train_mode:
        model.eval()
    for epoch in range(epochs):  # :61-64
        pruner.score(model, loss, dataloader, device)
        sparse = 1 - density ** ((epoch + 1) / epochs)
        pruner.mask(sparse, scope, keep=keep)
        if observe is not None:
            observe(epoch + 1, pruner)


def setup(model: nn.Module) -> tuple[LogSoftmaxHook, list[tuple[torch.Tensor, torch.Tensor]]]:
    """What ``main.py`` does to a fresh model before pruning: the log-softmax hook (:378), then the masked
    parameters, which the pruner is built with (:76)."""
    hook = LogSoftmaxHook(model)
    return hook, masked_parameters(model)


def effective_weights(model: nn.Module) -> list[torch.Tensor]:
    """``weight_orig * weight_mask`` of every masked layer, what the trained network starts from."""
    return [m.weight_orig.detach() * m.weight_mask for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
