"""SET in the ITOP framework (Liu et al. 2021, "In-Time Over-Parameterization"), as
Shiweiliuiiiiiii/In-Time-Over-Parameterization implements it, rule by rule: a model of the
reference's rules, not a copy of its code. The PAGS paper samples its dynamic-sparse-training
masks with it (pags.md 1.1: magnitude pruning, random growth, renewal rate 50 %, 99 % sparsity).

Reference: Shiweiliuiiiiiii/In-Time-Over-Parameterization @ 1b6a89e, files
``sparselearning/core.py`` (``core``) and ``main.py`` (``main``). The method is the README's SET-ITOP
command: ``--sparse --sparse_init ERK --growth random --death magnitude --redistribution none``
(the argparse defaults, core:14-18), death rate 0.5 with the cosine decay (core:18, main:270).

Replacements: the reference draws from the global CPU RNG (``torch.rand``, core:191, core:462);
here the uniform draws come from a ``rand(shape)`` callable, so a test can feed both sides the same
draws. Nothing here imports ``harness``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn


def erk_densities(shapes: dict[str, tuple[int, ...]], density: float, power: float = 1.0) -> dict[str, float]:
    """ERK layer densities (core:122-194): ``eps * (sum(shape) / prod(shape)) ** power``, eps chosen so
    that the expected count is ``density`` of the whole; while the largest density is above 1, every
    layer with the largest raw probability becomes dense and eps is solved again over the rest."""
    dense: set[str] = set()
    while True:
        divisor, rhs, raw = 0, 0, {}
        for name, shape in shapes.items():
            n_param = np.prod(shape)
            if name in dense:
                rhs -= n_param * (1 - density)
            else:
                rhs += n_param * density
                raw[name] = (np.sum(shape) / np.prod(shape)) ** power
                divisor += raw[name] * n_param
        epsilon = rhs / divisor
        max_prob = np.max(list(raw.values()))
        if max_prob * epsilon > 1:
            for name, p in raw.items():
                if p == max_prob:
                    dense.add(name)
        else:
            break
    return {name: (1.0 if name in dense else epsilon * raw[name]) for name in shapes}


def initial_masks(shapes: dict[str, tuple[int, ...]], densities: dict[str, float],
                  rand: Callable[[tuple[int, ...]], torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each entry kept independently: a uniform draw ``< density`` of its layer (core:191 for ERK,
    core:118 for 'uniform'), layers in module order."""
    return {n: rand(shape) < densities[n] for n, shape in shapes.items()}


class CosineDecay:
    """The death rate follows torch's CosineAnnealingLR on a dummy SGD (core:22-31), floor 0.005,
    ``T_max = len(train_loader) * epochs * multiplier`` (main:270), stepped once per iteration."""

    def __init__(self, death_rate: float, t_max: int, eta_min: float = 0.005):
        self.sgd = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=death_rate)
        self.stepper = torch.optim.lr_scheduler.CosineAnnealingLR(self.sgd, t_max, eta_min)

    def step(self) -> None:
        self.stepper.step()

    def rate(self) -> float:
        return self.sgd.param_groups[0]["lr"]


class SETITOP:
    """The reference's ``Masking`` for SET-ITOP on the given prunable tensors. The training loop
    calls :meth:`step` instead of ``optimizer.step()`` (main:101)."""

    def __init__(self, params: dict[str, nn.Parameter], optimizer: torch.optim.Optimizer,
                 masks: dict[str, torch.Tensor], death_rate: float, t_max: int, update_frequency: int,
                 rand: Callable[[tuple[int, ...]], torch.Tensor], eta_min: float = 0.005):
        self.params, self.optimizer, self.rand = params, optimizer, rand
        self.masks = {n: m.to(torch.float32).clone() for n, m in masks.items()}
        self.decay = CosineDecay(death_rate, t_max, eta_min)
        self.death_rate = death_rate
        self.update_frequency = update_frequency  # prune_every_k_steps (core:78-79)
        self.steps = 0
        self.log: list[dict] = []
        self.apply_mask()  # core:196
        self.fired = {n: m.bool().clone() for n, m in self.masks.items()}  # core:197

    def apply_mask(self) -> None:
        """Weights times mask and momentum buffer times mask (core:279-286)."""
        with torch.no_grad():
            for n, p in self.params.items():
                p.data = p.data * self.masks[n]
                state = self.optimizer.state[p]
                if "momentum_buffer" in state:
                    state["momentum_buffer"] = state["momentum_buffer"] * self.masks[n]

    def step(self) -> None:
        """optimizer.step(), mask, the death rate advances one iteration, and every
        ``update_frequency`` iterations one re-allocation (core:212-223); no stop."""
        self.optimizer.step()
        self.apply_mask()
        self.decay.step()
        self.death_rate = self.decay.rate()
        self.steps += 1
        if self.steps % self.update_frequency == 0:
            self.truncate_weights()
            for n in self.masks:  # fired_masks_update (core:549-563)
                self.fired[n] |= self.masks[n].bool()

    # -- the rules a planted difference may change
    def keep_above(self, w: torch.Tensor, threshold: float) -> torch.Tensor:
        return torch.abs(w) > threshold  # core:401

    def current_rate(self) -> float:
        return self.death_rate  # set by the decay at every step (core:215-216)

    @torch.no_grad()
    def truncate_weights(self) -> None:
        """Per layer: magnitude death at the current rate, then random growth of as many entries as
        died, in the same layer; then apply_mask (core:320-368)."""
        removed, nonzeros = {}, {}
        for n, w in self.params.items():
            mask = self.masks[n]
            nonzeros[n] = mask.sum().item()
            zeros = mask.numel() - nonzeros[n]
            # magnitude death (core:389-401): ceil(rate * nonzeros) die; the threshold is the k-th
            # smallest |w| of the whole tensor (k = zeros + num_remove) and everything <= it dies
            num_remove = math.ceil(self.current_rate() * nonzeros[n])
            if num_remove == 0.0:
                new = w.data != 0.0
            else:
                x, _ = torch.sort(torch.abs(w.data.view(-1)))
                k = math.ceil(zeros + num_remove)
                new = self.keep_above(w.data, x[k - 1].item())
            removed[n] = int(nonzeros[n] - new.sum().item())  # core:340
            self.masks[n][:] = new
        grown_total = 0
        for n, w in self.params.items():
            new = self.masks[n].bool()
            # random growth (core:457-466): each masked entry (the just-died included) is unmasked with
            # probability removed / masked, one uniform draw per entry of the tensor
            n_zero = (new == 0).sum().item()
            if n_zero != 0:
                draw = self.rand(new.shape) < (removed[n] / n_zero)
                grown = new | draw
                if (grown != 0).sum().item() == 0:
                    grown = new
                grown_total += int((grown & ~new).sum())
                new = grown
            self.masks[n] = new.float()
        self.apply_mask()  # core:368
        self.log.append({"step": self.steps, "rate": self.death_rate, "removed": sum(removed.values()),
                         "grown": grown_total})
