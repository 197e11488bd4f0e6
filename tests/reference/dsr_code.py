"""DSR, dynamic sparse reparameterisation (Mostafa & Wang 2019), as IntelAI/dynamic-reparameterization
implements it, rule by rule: a model of the reference's rules, not a copy of its code.

Reference: IntelAI/dynamic-reparameterization @ 7fe9f43, files ``main.py`` (``main``),
``parameterized_tensors.py`` (``pt``), ``reparameterized_layers.py`` and ``model.py``. The method is
DSR's CIFAR command (``experiments/wrnet_experiments.yaml``): ``--rewire --threshold-prune
--rewire-scaling --sub-kernel-granularity 4`` (per-entry masks), new weights at zero (no
``--big-new-weights``).

Mechanism: a sparse layer holds a dense tensor ``s`` and a mask; its forward uses ``mask * s``
(pt:246-250), so the gradient of a masked entry is 0, while weight decay and momentum still move the
hidden value ``s`` of a masked entry (the optimizer steps on all of ``s``, main:363-365, main:613).
Modelled here with ``torch.nn.utils.parametrize``: the layer's weight becomes ``mask * s`` with ``s``
the parameter the optimizer steps on.

Replacements: the reference draws from numpy's and torch's global RNGs (``np.random.shuffle``,
``np.random.randint``, ``torch.randperm``); here every draw goes through a :class:`TorchDraws`, so a
test can feed both sides the same draws. Nothing here imports ``harness``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize


class TorchDraws:
    """The random draws DSR makes, from one torch generator: ``randperm(n)`` (torch.randperm in
    pt:236, np.random.shuffle in pt:101-103) and ``randint(n)`` (np.random.randint in main:664)."""

    def __init__(self, generator: torch.Generator):
        self.gen = generator

    def randperm(self, n: int) -> torch.Tensor:
        return torch.randperm(n, generator=self.gen)

    def randint(self, n: int) -> int:
        return int(torch.randint(n, (1,), generator=self.gen))


def initial_masks(shapes: dict[str, tuple[int, ...]], initial_sparsity: float,
                  draws: TorchDraws) -> dict[str, torch.Tensor]:
    """Each sparse tensor keeps exactly ``int((1 - initial_sparsity) * n + 0.1)`` entries at the first
    positions of a random permutation (pt:99-103)."""
    out = {}
    for name, shape in shapes.items():
        n = int(np.prod(shape))
        flat = torch.zeros(n, dtype=torch.bool)
        flat[draws.randperm(n)[: int((1 - initial_sparsity) * n + 0.1)]] = True
        out[name] = flat.view(shape)
    return out


def schedule_value(schedule: list[tuple[int, int]], epoch: int) -> int:
    """The value of the last entry whose epoch key is <= ``epoch`` (get_schedule_val, main:778-784)."""
    value = schedule[-1][1]
    for i, (key, _) in enumerate(schedule):
        if epoch < key:
            value = schedule[i - 1][1]
            break
    return value


class _MaskTimes(nn.Module):
    """SparseTensor.forward: mask * s (pt:246-250)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.to(torch.float32).clone())

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.mask * s


class DSR:
    """The sparse layers of ``model`` (``names``: their weights, module order) as DSR's SparseTensors,
    and DSR's re-allocation (``rewire``). Build the optimizer on ``model.parameters()`` after this."""

    def __init__(self, model: nn.Module, names: list[str], masks: dict[str, torch.Tensor], n_prune_params: float,
                 draws: TorchDraws, threshold: float = 1.0e-3):
        self.names, self.draws = list(names), draws
        self.modules = {}
        for n in self.names:
            module = model.get_submodule(n.rsplit(".", 1)[0])
            parametrize.register_parametrization(module, "weight", _MaskTimes(masks[n]))
            self.modules[n] = module
        self.n_prune_params = n_prune_params  # --n-prune-params (main:89-90)
        self.threshold = threshold  # threshold = 1.0e-3 before the epoch loop (main:473)
        self.log: list[dict] = []

    def s(self, n: str) -> torch.Tensor:
        return self.modules[n].parametrizations.weight.original

    def mask(self, n: str) -> torch.Tensor:
        return self.modules[n].parametrizations.weight[0].mask

    # -- when (main:627): after the optimizer step of iteration i + current_iteration (0-based, counted
    # over the whole run), when it is not 0 and a multiple of this epoch's rewire period, in an epoch
    # (0-based, main:474) before --stop-rewire-epoch
    def due(self, iteration: int, epoch: int, period: int, stop_epoch: int) -> bool:
        return iteration != 0 and iteration % period == 0 and epoch < stop_epoch

    @torch.no_grad()
    def rewire(self) -> None:
        pruned_indices, n_pruned = [], np.zeros(len(self.names))
        for i, n in enumerate(self.names):
            pruned_indices.append(self.prune_threshold(n))  # main:631-637
            n_pruned[i] = pruned_indices[-1].size(0)
        # --rewire-scaling (main:639-674): every tensor regrows in proportion to its surviving entries
        # (the mean pruned fraction times its nonzeros, normalised); counts rounded half-to-even, the
        # rounding discrepancy added to one random tensor; repeat until all pruned entries regrew
        nonzeros = np.array([float(self.mask(n).sum()) for n in self.names])
        fraction = n_pruned / nonzeros
        adjusted = np.clip(np.ones_like(fraction) * fraction.mean(), 0.0, 1.0)
        grow_backs = adjusted * nonzeros
        grow_backs /= grow_backs.sum()
        n_grown, rounds = 0, 0
        while n_grown < n_pruned.sum():
            to_grow = n_pruned.sum() - n_grown
            counts = np.round(grow_backs * to_grow).astype("int32")
            discrepancy = to_grow - counts.sum()
            if discrepancy != 0:
                j = self.draws.randint(len(counts))
                counts[j] = max(0, counts[j] + discrepancy)
            for i, n in enumerate(self.names):
                n_grown += self.grow_random(n, pruned_indices[i], int(counts[i]))
            rounds += 1
        # adapt the global threshold toward --n-prune-params pruned per re-allocation, band +-10 %
        # (main:680-685); the new threshold is used at the next re-allocation
        total = n_pruned.sum()
        if total > 1.1 * self.n_prune_params:
            self.threshold /= 2.0
        elif total < 0.9 * self.n_prune_params:
            self.threshold *= 2.0
        self.log.append({"pruned": int(total), "grown": int(n_grown), "rounds": rounds, "threshold": self.threshold})

    def prune_threshold(self, n: str) -> torch.Tensor:
        """Mask every active entry with ``|s| < threshold`` (strict); if that is every active entry,
        the first one stays (pt:182-214); then every masked entry's hidden value is set to 0
        (reinitialize_unused, pt:112-115, pt:211)."""
        s, mask = self.s(n), self.mask(n)
        mask_flat = mask.view(-1)
        active = torch.nonzero(mask_flat > 0.5).view(-1)
        drop = (s.data.reshape(-1)[active].abs() < self.threshold).nonzero().view(-1)
        if active.size(0) == drop.size(0):
            drop = drop[1:]
        mask_flat[active[drop]] = 0
        s.data[mask < 0.5] = 0.0
        return active[drop]

    def grow_random(self, n: str, pruned: torch.Tensor, n_to_add: int) -> int:
        """Unmask ``n_to_add`` masked entries, not the ones this re-allocation pruned, at random (the
        first of a random permutation of the sorted candidates); fewer when fewer are free (pt:216-239).
        Their hidden value is 0 (zeroed when pruning)."""
        mask_flat = self.mask(n).view(-1)
        zero = torch.nonzero(mask_flat < 0.5).view(-1)
        zero = torch.from_numpy(np.setdiff1d(zero.numpy(), pruned.numpy())).long()
        cutoff = min(n_to_add, zero.numel())
        grown = zero[self.draws.randperm(zero.numel())][:cutoff]
        mask_flat[grown] = 1
        return cutoff
