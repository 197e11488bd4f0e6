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
    """Forward MACs of every Conv2d/Linear module for one image, keyed by its ``named_modules()`` name.

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

    for name, m in model.named_modules():
        if isinstance(m, _PRUNABLE):
            result[name] = 0
            handles.append(m.register_forward_hook(hook(name)))
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
        mask = masks.get(f"{name}.weight")
        if mask is None:
            nonzero += layer
        else:
            # Exact: a layer's MACs are a whole multiple of its weight count, so this division has no remainder.
            nonzero += layer * int(torch.count_nonzero(mask)) // mask.numel()
    return dense, nonzero


@torch.no_grad()
def dead_neuron_rate(model: nn.Module, batches) -> tuple[float, dict[str, float]]:
    """Dynamic dead-neuron rate, **harness-defined** (ap.md 6: the AP code computes none): the fraction of ReLU outputs
    that are exactly zero over every image of ``batches``, in eval mode, per ReLU site and overall.

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
