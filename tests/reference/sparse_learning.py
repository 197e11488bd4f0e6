"""Sparse Momentum (Dettmers & Zettlemoyer 2019) as TimDettmers/sparse_learning implements it,
rule by rule: a model of the reference's rules, not a copy of its code.

Reference: TimDettmers/sparse_learning @ e19ff16, files ``sparselearning/core.py`` (``core``),
``sparselearning/funcs.py`` (``funcs``) and ``mnist_cifar/main.py`` (``main``). Every rule below
names the lines it comes from. The method is ``--prune magnitude --growth momentum
--redistribution momentum`` (the defaults, core:18-20) with the cosine prune-rate decay (main:160,
main:256-257).

Replacements (the only places this model is not the reference's own mechanism):

* the reference draws its initial mask from the global CPU RNG (core:155); here the uniform draws
  come from a ``rand(shape)`` callable, so a test can feed both sides the same draws;
* the reference sorts with ``torch.sort`` (not stable on ties) on CUDA; this model makes the same
  call on the CPU. Ties do occur at the growth cut (entries with zero momentum at dead units, where
  the reference may pick active entries and so grow fewer); ``log[i]["ties"]`` records them. Both
  sides of a lockstep test make the same ``torch.sort`` call, so they pick alike.

Nothing here imports ``harness``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn


class CosineDecay:
    """The prune rate follows torch's CosineAnnealingLR on a dummy one-parameter SGD whose lr is the
    prune rate (core:26-39); floor ``eta_min`` 0.005 (core:31); ``T_max`` is every iteration of the
    run, ``len(train_loader) * epochs`` (main:257). sparse_learning asks for PyTorch 1.2 (README:7),
    whose CosineAnnealingLR is the recursive ("chainable") form that current torch still steps with,
    so the live torch scheduler is the faithful model."""

    def __init__(self, prune_rate: float, t_max: int, eta_min: float = 0.005):
        self.sgd = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=prune_rate)
        self.stepper = torch.optim.lr_scheduler.CosineAnnealingLR(self.sgd, t_max, eta_min)

    def step(self) -> None:
        self.stepper.step()

    def rate(self) -> float:
        return self.sgd.param_groups[0]["lr"]


def initial_masks(shapes: dict[str, tuple[int, ...]], density: float,
                  rand: Callable[[tuple[int, ...]], torch.Tensor]) -> dict[str, torch.Tensor]:
    """'constant' initialisation (core:147-157): every sparse tensor, in module order, keeps each
    entry independently with probability ``density`` (a uniform draw ``< density``, core:155)."""
    return {n: rand(shape) < density for n, shape in shapes.items()}


class SparseMomentum:
    """The reference's ``Masking`` object for Sparse Momentum, on the given prunable tensors.

    ``masks``: the initial masks (bool, module order); ``density``: the ``--density`` argument
    (it only enters ``baseline_nonzero``, core:156). The training loop calls :meth:`step` instead of
    ``optimizer.step()`` (main:91) and :meth:`at_end_of_epoch` after epochs ``1 .. E-1`` (main:276-277).
    """

    def __init__(self, params: dict[str, nn.Parameter], optimizer: torch.optim.Optimizer,
                 masks: dict[str, torch.Tensor], density: float, prune_rate: float, t_max: int,
                 eta_min: float = 0.005):
        self.params, self.optimizer = params, optimizer
        self.masks = {n: m.to(torch.float32).clone() for n, m in masks.items()}  # float masks (core:295)
        self.decay = CosineDecay(prune_rate, t_max, eta_min)
        self.prune_rate = prune_rate  # Masking(prune_rate=...) (main:260, core:122)
        self.steps = 0
        # baseline_nonzero: sum of numel * density over the sparse tensors (core:151-156)
        self.baseline_nonzero = 0.0
        for n in self.masks:
            self.baseline_nonzero += self.params[n].numel() * density
        self.adjusted_growth = 0  # core:107
        self.adjustments: list[float] = []  # core:108
        self.log: list[dict] = []  # what each re-allocation did (for the tests)
        self.apply_mask()  # at the end of init (core:157)

    # -- per iteration
    def apply_mask(self) -> None:
        """Weights times mask, nothing else: the momentum of a masked weight keeps accumulating its
        gradient (core:347-357)."""
        with torch.no_grad():
            for n, p in self.params.items():
                p.data = p.data * self.masks[n]

    def step(self) -> None:
        """optimizer.step(), mask, then the prune rate advances one iteration (core:277-283). The
        ``prune_every_k_steps`` branch (core:285-289) is off: main.py never sets it (main:260)."""
        self.optimizer.step()
        self.apply_mask()
        self.decay.step()
        self.prune_rate = self.decay.rate()
        self.steps += 1

    def at_end_of_epoch(self) -> None:
        self.truncate_weights()  # core:272-275

    # -- the rules a planted difference may change
    def num_remove(self, rate: float, nonzeros: float) -> int:
        """Entries a layer prunes: ``ceil(rate * nonzeros)`` (funcs:107, core:475)."""
        return math.ceil(rate * nonzeros)

    def current_rate(self) -> float:
        return self.prune_rate

    def zero_regrown_weights(self, grown: dict[str, torch.Tensor]) -> None:
        """The reference does nothing to a regrown weight: one pruned and regrown in the same update
        keeps its value, one regrown from the masked set is 0 because apply_mask zeroed it
        (funcs:177-249 only edits the mask; apply_mask at core:414 multiplies by the final mask)."""

    # -- one re-allocation (core:377-422)
    @torch.no_grad()
    def truncate_weights(self) -> None:
        names = list(self.masks)
        old = {n: self.masks[n].bool().clone() for n in names}
        # statistics (core:424-459): redistribution share = mean |momentum| over the active entries
        # (funcs:35-37), normalised to sum 1 over layers; NaN layers are left out of the sum
        share, nonzeros, zeros = {}, {}, {}
        total_share = 0.0
        for n in names:
            mom = self.momentum(n)
            share[n] = torch.abs(mom[self.masks[n].bool()]).mean().item()
            if not np.isnan(share[n]):
                total_share += share[n]
            nonzeros[n] = self.masks[n].sum().item()
            zeros[n] = self.masks[n].numel() - nonzeros[n]
        for n in names:
            if total_share != 0.0:
                share[n] /= total_share
        # per-layer prune rate (core:359-375): a nearly dense layer (sparsity < 0.2) whose share is
        # above the mean (1/L) prunes at most its sparsity
        rate = {}
        for n in names:
            rate[n] = self.current_rate()
            sparsity = zeros[n] / float(self.masks[n].numel())
            if sparsity < 0.2:
                if (1.0 / len(share)) / share[n] < 1.0:
                    rate[n] = min(sparsity, rate[n])
        # magnitude pruning per layer (funcs:56-114): sort |w| over the whole tensor and mask the
        # first zeros + num_remove entries (the masked zeros sort first); num_remove == 0 keeps w != 0
        total_removed = 0.0
        ties = False  # (instrumentation) equal values at a cut: the unstable sort's order would matter
        for n in names:
            w = self.params[n].data
            k_remove = self.num_remove(rate[n], nonzeros[n])
            if k_remove == 0.0:
                new = (w != 0.0).to(torch.float32)
            else:
                k = math.ceil(zeros[n] + k_remove)
                x, idx = torch.sort(torch.abs(w.reshape(-1)))
                ties |= 0 < k < x.numel() and bool(x[k - 1] == x[k])
                new = self.masks[n].clone()
                new.view(-1)[idx[:k]] = 0.0
            total_removed += nonzeros[n] - new.sum().item()
            self.masks[n] = new
        pruned_mask = {n: self.masks[n].bool().clone() for n in names}
        # regrowth per layer: share of (removed + adjustment), ceil, capped at 0.99 of the layer's free
        # slots; what a capped layer cannot take is spread evenly over all layers, up to 1000 rounds
        # (core:461-497)
        regrowth: dict[str, float] = {}
        residual, mean_residual, rounds = 9999, 0, 0
        spilled = False
        while residual > 0 and rounds < 1000:
            residual = 0
            for n in names:
                k_remove = self.num_remove(rate[n], nonzeros[n])
                max_regrowth = zeros[n] + k_remove
                g = regrowth[n] if n in regrowth else math.ceil(share[n] * (total_removed + self.adjusted_growth))
                g += mean_residual
                if g > 0.99 * max_regrowth:
                    regrowth[n] = 0.99 * max_regrowth
                    residual += g - regrowth[n]
                    spilled = True
                else:
                    regrowth[n] = g
            mean_residual = 0 if len(regrowth) == 0 else residual / len(regrowth)
            rounds += 1
        # momentum growth (funcs:177-249): floor(regrowth) masked entries with the largest |momentum|
        # (core:407); the candidates include the entries this update just pruned
        total_new = 0
        for n in names:
            new = self.masks[n].bool()
            mom = self.momentum(n) * (new == 0).float()
            y, idx = torch.sort(torch.abs(mom).flatten(), descending=True)
            k = math.floor(regrowth[n])
            ties |= 0 < k < y.numel() and bool(y[k - 1] == y[k])
            new.view(-1)[idx[:k]] = True
            total_new += new.sum().item()
            self.masks[n] = new.float()
        grown = {n: self.masks[n].bool() & ~pruned_mask[n] for n in names}
        self.zero_regrown_weights(grown)
        self.apply_mask()  # core:414
        # exponential smoothing of (baseline - actual) to correct the next growth (core:416-419)
        self.adjustments.append(self.baseline_nonzero - total_new)
        self.adjusted_growth = (0.25 * self.adjusted_growth + 0.75 * (self.baseline_nonzero - total_new)
                                + np.mean(self.adjustments))
        self.log.append({
            "step": self.steps, "rate": self.current_rate(), "removed": total_removed, "spilled": spilled, "ties": ties,
            "rounds": rounds, "regrowth": {n: math.floor(regrowth[n]) for n in names},
            "pruned_and_regrown": sum(int((old[n] & ~pruned_mask[n] & self.masks[n].bool()).sum()) for n in names),
        })

    def momentum(self, n: str) -> torch.Tensor:
        """SGD's momentum buffer, or Adam's m / (sqrt(v) + 1e-8) (core:516-524)."""
        state = self.optimizer.state[self.params[n]]
        if "exp_avg" in state:
            return state["exp_avg"] / (torch.sqrt(state["exp_avg_sq"]) + 1e-08)
        return state["momentum_buffer"]
