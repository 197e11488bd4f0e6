"""Model metrics defined once for every paper: parameter counts and forward MACs (common.md section 2).

MACs follow common.md 2.1: only Conv2d and Linear layers count, conv MAC = C_out*H_out*W_out*C_in/groups*kh*kw,
linear MAC = in*out, for one image. "Sparse" MACs scale each layer by the unmasked fraction of its weight
(common.md 2.2: report dense "hardware" MACs and nonzero MACs separately).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

_PRUNABLE = (nn.Conv2d, nn.Linear)


def count_params(model: nn.Module) -> int:
    """Total number of parameters (buffers such as BN running stats excluded)."""
    return sum(p.numel() for p in model.parameters())


def layer_macs(model: nn.Module, input_shape: tuple[int, ...] = (3, 32, 32)) -> dict[str, int]:
    """Forward MACs of every Conv2d/Linear module for one image, keyed by its ``named_modules()`` name; a
    MultiheadAttention module counts its q/k/v projection under its name, its output projection under
    ``<name>.out_proj`` (the attention uses that Linear's weight without calling the module) and the attention
    products (no weights) under ``<name>.attention``.

    Output sizes are measured with forward hooks on one zero image in eval mode; modules whose forward is skipped
    (e.g. the EfficientNet expansion conv with e = 1) count 0. Each module's training flag is restored afterwards.
    """
    result: dict[str, int] = {}
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def hook(name: str) -> Callable[..., None]:
        def fn(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            # MACs per output element = weight entries feeding it; output.numel() is for a batch of one image.
            per_output = module.weight[0].numel() if isinstance(module, nn.Conv2d) else module.in_features
            result[name] += output.numel() * per_output

        return fn

    def attention(name: str) -> Callable[..., None]:
        def fn(module: nn.MultiheadAttention, inputs: tuple[torch.Tensor, ...], output) -> None:
            q = inputs[0]
            tokens = q.shape[1] if module.batch_first or q.dim() == 2 else q.shape[0]
            tokens = q.shape[0] if q.dim() == 2 else tokens
            e = module.embed_dim
            result[name] += tokens * 3 * e * e  # the q/k/v projections (in_proj_weight)
            # out_proj is a Linear the attention multiplies by its weight without calling it: no hook of its own fires
            result[f"{name}.out_proj"] = result.get(f"{name}.out_proj", 0) + tokens * e * module.out_proj.out_features
            result[f"{name}.attention"] += 2 * tokens * tokens * e  # q k^T and the weighted sum: no weights

        return fn

    for name, m in model.named_modules():
        if isinstance(m, _PRUNABLE):
            result[name] = 0
            handles.append(m.register_forward_hook(hook(name)))
        elif isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
            result[name] = result[f"{name}.attention"] = 0
            handles.append(m.register_forward_hook(attention(name)))
    modes = {m: m.training for m in model.modules()}
    param = next(model.parameters())
    x = torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype)
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return result


def macs(
    model: nn.Module,
    masks: dict[str, torch.Tensor] | None = None,
    input_shape: tuple[int, ...] = (3, 32, 32),
) -> tuple[int, int]:
    """Return ``(dense_macs, nonzero_macs)`` for one image.

    ``masks`` maps parameter names such as ``"features.0.weight"`` to masks (nonzero = kept). A layer's nonzero MACs
    are its dense MACs times the fraction of its weight entries left unmasked; layers without a mask count dense.
    """
    per_layer = layer_macs(model, input_shape)
    masks = masks or {}
    dense = nonzero = 0
    for name, layer in per_layer.items():
        dense += layer
        mask = masks.get(f"{name}.weight", masks.get(f"{name}.in_proj_weight"))
        if mask is None:
            nonzero += layer
        else:
            # Exact: a layer's MACs are a whole multiple of its weight count, so this division has no remainder.
            nonzero += layer * int(torch.count_nonzero(mask)) // mask.numel()
    return dense, nonzero


@torch.no_grad()
def dead_neuron_rate(model: nn.Module, batches) -> tuple[float, dict[str, float]]:
    """Post-training dead-neuron rate on fixed ``batches`` (the test set in the reports), **harness-defined** (ap.md 6:
    the AP code computes none): the fraction of ReLU outputs that are exactly zero over every image of ``batches``,
    in eval mode, per ReLU site and overall. This is *not* the paper's dynamic DNR "during optimisation" (ap.md 1.1),
    which :class:`DeadNeuronMeter` measures over the training batches while the model trains.

    Every ``nn.ReLU`` module is a site (forward hooks; the models used for it call each site through its own module:
    no functional ``F.relu`` and no module reused twice). Overall = zero outputs / all outputs summed over the sites
    (so every activation counts once, wider layers weigh more). Returns ``(overall, {module name: rate})``;
    ``(nan, {})`` when the model has no ``nn.ReLU`` module or ``batches`` is empty.
    """
    zeros: dict[str, torch.Tensor] = {}
    totals: dict[str, int] = {}
    handles = []

    def hook(name: str) -> Callable[..., None]:
        def fn(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            z = (output == 0).sum()
            zeros[name] = z if name not in zeros else zeros[name] + z
            totals[name] = totals.get(name, 0) + output.numel()

        return fn

    for name, m in model.named_modules():
        if isinstance(m, nn.ReLU):
            handles.append(m.register_forward_hook(hook(name)))
    was_training = model.training
    try:
        model.eval()
        for x, _ in batches:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not totals:
        return float("nan"), {}
    per_layer = {n: int(zeros[n]) / totals[n] for n in totals}
    overall = sum(int(zeros[n]) for n in totals) / sum(totals.values())
    return overall, per_layer


class DeadNeuronMeter:
    """The paper's **dynamic** dead-neuron rate "during optimisation" (ap.md 1.1): the fraction of ReLU outputs that
    are exactly zero in the forward passes the model makes *while it trains* (training mode, the augmented training
    batches, the weights of that step), counted per ReLU site and overall (element-weighted, as
    :func:`dead_neuron_rate`), from the last :meth:`read` on (so per epoch when read at every epoch end).

    Forward hooks on every ``nn.ReLU`` module (each site its own module, as :func:`dead_neuron_rate` assumes) add to
    counters that stay on the device: nothing is read on the host until :meth:`read` (the training loop's no-sync
    rule). Forward passes in eval mode (evaluations between epochs) are not counted. Use as a context manager, or
    call :meth:`close` to remove the hooks.
    """

    def __init__(self, model: nn.Module):
        self.sites = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ReLU)]
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        # device scalars, added to in place: no host read, and nothing a compiled forward would have to guard on
        self._zeros = [torch.zeros((), dtype=torch.long, device=device) for _ in self.sites]
        self._totals = [torch.zeros((), dtype=torch.long, device=device) for _ in self.sites]
        self._handles = [m.register_forward_hook(self._hook(i)) for i, (_, m) in enumerate(self.sites)]

    def _hook(self, i: int) -> Callable[..., None]:
        def fn(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if not module.training:
                return
            self._zeros[i].add_((output == 0).sum())
            self._totals[i].add_(output.numel())

        return fn

    def read(self, reset: bool = True) -> tuple[float, dict[str, float]]:
        """``(overall, {site: rate})`` since the last reset (one host read); ``(nan, {})`` when nothing was counted."""
        zeros = torch.stack(self._zeros).tolist() if self.sites else []
        totals = torch.stack(self._totals).tolist() if self.sites else []
        if sum(totals) == 0:
            out: tuple[float, dict[str, float]] = (float("nan"), {})
        else:
            out = (sum(zeros) / sum(totals), {name: z / t for (name, _), z, t in zip(self.sites, zeros, totals) if t})
        if reset:
            for c in (*self._zeros, *self._totals):
                c.zero_()
        return out

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "DeadNeuronMeter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
