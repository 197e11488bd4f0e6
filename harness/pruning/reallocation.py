"""Dynamic sparse training's re-allocation (the toolkit side of the ``dynamic`` procedure): DSR (Mostafa & Wang 2019) and Sparse Momentum (Dettmers & Zettlemoyer
2019), DPF's dynamic baselines (dpf.md section 4), and SET as the ITOP framework runs it (Liu et al.
2021), the PAGS paper's mask sampler (pags.md 1.1). Each follows its reference code step for step;
``tests/reference/test_dynamic_reference.py`` runs it in lockstep with a transcription of that code.

``regrow`` picks the method (the references: IntelAI/dynamic-reparameterization @ 7fe9f43 "DSR",
TimDettmers/sparse_learning @ e19ff16 "SL", Shiweiliuiiiiiii/In-Time-Over-Parameterization @ 1b6a89e
"ITOP"; file:line of each rule in the comments below):

* ``random`` (DSR): every layer keeps its masked entries' *hidden* values: the forward pass sees
  ``m * w`` and the gradient of a masked entry is 0, while weight decay and momentum keep moving its
  hidden value (DSR parameterized_tensors.py:246-250). Every re-allocation masks each active entry
  with ``|w| < H`` (one global threshold, strict; a layer that would lose every entry keeps its first),
  zeroes every masked hidden value, and regrows the same number at random masked positions other than
  the just-pruned ones, spread over layers in proportion to their surviving entries (numpy's
  half-to-even rounding, the discrepancy to one random layer, repeated while a full layer leaves some
  over). ``H`` halves when more than ``(1 + tolerance)`` of ``prune_fraction`` of the active entries
  went, and doubles when fewer than ``(1 - tolerance)`` (DSR main.py:627-685).
* ``momentum`` (Sparse Momentum): masked weights are zeroed after every step, their momentum keeps
  accumulating. Every layer prunes ``ceil(p_t * active)`` smallest-magnitude entries, ``p_t`` the
  prune rate decayed per iteration over the whole run by torch's (recursive) cosine annealing from
  ``prune_rate`` to the floor ``prune_rate_min``; a nearly dense layer (sparsity < 0.2) with an above-mean
  share prunes at most its sparsity. Regrowth per layer is ``ceil(share * (removed + adjustment))``,
  ``share`` its normalised mean momentum magnitude over its active entries, capped at 0.99 of its free
  slots with the excess spread evenly over all layers (up to 1000 rounds), then floored; the masked
  entries (the just-pruned included) with the largest momentum magnitude regrow. ``adjustment`` is an
  exponential smoothing of (expected - actual) active counts, so the count drifts back toward
  ``density * N`` (SL core.py:377-510, funcs.py:7-249).
* ``set`` (SET-ITOP): as ``momentum`` for the mask application, and the momentum of a masked weight is
  zeroed too (ITOP core.py:279-286). Every layer prunes at the threshold of its ``ceil(zeros + ceil(p_t *
  active))``-th smallest ``|w|`` (everything at or below it), then unmasks each masked entry (the
  just-pruned included) independently with probability removed / masked (ITOP core.py:320-466).

A weight pruned and regrown in the same update keeps its value (and its momentum); a weight
regrown from the masked set starts at 0 (all three references). Sparse Momentum's cuts sort with the
reference's own call (``torch.sort``, not stable): on ties (equal ``|w|``, or zero momentum at dead
units, where the reference may "regrow" an active entry and grow fewer) the project picks what the
reference picks on the same device and torch version. A layer without active entries takes no
regrowth share (deviation ``dynamic_empty_layers``: there DSR's code computes NaN counts and SL's code
raises; SET-ITOP's code handles it and so does the project).

Timing, with ``P`` the period ``update_every`` (or the ``update_schedule`` entry in force) in steps:
DSR re-allocates after the 0-based optimizer step ``i`` with ``i > 0``, ``i % P == 0`` and ``i <
stop`` (DSR main.py:627); SM after the ``t``-th step with ``t % P == 0``, ``t < total`` (SL re-allocates
at the end of every epoch but the last, mnist_cifar/main.py:276-277) and ``t <= stop``; SET-ITOP after
the ``t``-th step with ``t % P == 0`` (the last step included, ITOP core.py:219-221) and ``t <= stop``.
The initial mask is drawn at ``initial`` layer densities (uniform, or ITOP's ERK, core.py:122-194): DSR
keeps exactly ``int(d * n + 0.1)`` entries per layer (parameterized_tensors.py:99-103), SM and SET-ITOP
keep each entry with probability ``d`` (SL core.py:155, ITOP core.py:191). ``reactivated`` counts the
entries active after an update that were masked before it. Rows are on the ``epoch`` axis.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from harness.pruning.hooks import Reactivation, UpdateHook, masked_view
from harness.pruning.masks import MaskSet
from harness.pruning.schedules import Periodic

# harness.pruning.methods.dynamic.DynamicParams (not imported: the procedures import this toolkit module)
DynamicParams = Any

__all__ = ["ReallocationHook", "CosineRate", "erk_densities", "initial_masks", "layer_densities"]


# --------------------------------------------------------------------------- initial mask


def erk_densities(shapes: list[tuple[int, ...]], density: float) -> list[float]:
    """ITOP's ERK layer densities (core.py:122-194): ``eps * sum(shape) / prod(shape)`` with eps such
    that the expected count is ``density`` of the whole; while one density exceeds 1, every layer with
    the largest raw probability becomes dense and eps is solved again over the others."""
    dense: set[int] = set()
    while True:
        divisor, rhs, raw = 0, 0, {}
        for i, shape in enumerate(shapes):
            n = math.prod(shape)
            if i in dense:
                rhs -= n * (1 - density)
            else:
                rhs += n * density
                raw[i] = sum(shape) / n
                divisor += raw[i] * n
        eps = rhs / divisor
        top = max(raw.values())
        if top * eps <= 1:
            return [1.0 if i in dense else eps * raw[i] for i in range(len(shapes))]
        dense.update(i for i, r in raw.items() if r == top)


def layer_densities(masks: MaskSet, initial: str, density: float) -> list[float]:
    if initial == "erk":
        return erk_densities([tuple(p.shape) for p in masks.params.values()], density)
    return [density] * len(masks.params)


def initial_masks(masks: MaskSet, p: DynamicParams, density: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The initial random mask at ``density`` of the prunable set, layers at ``p.initial`` densities.
    DSR: exactly ``int(d * n + 0.1)`` entries per layer at the first positions of a random permutation
    (DSR parameterized_tensors.py:99-103); SM and SET-ITOP: every entry kept with probability ``d``
    (SL core.py:155, ITOP core.py:118 and 191)."""
    out = {}
    for (name, w), d in zip(masks.params.items(), layer_densities(masks, p.initial, density)):
        if p.regrow == "random":
            flat = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
            order = torch.randperm(w.numel(), generator=gen, device=gen.device).to(w.device)
            flat[order[: int(d * w.numel() + 0.1)]] = True
            out[name] = flat.view(w.shape)
        else:
            out[name] = torch.rand(w.shape, generator=gen, device=gen.device) < d
    return out


# --------------------------------------------------------------------------- prune-rate schedule


class CosineRate:
    """torch's CosineAnnealingLR as stepped once per optimizer step (the recursive form, as in torch
    >= 1.1; SL asks for torch 1.2): ``r_t = (1 + cos(pi t / T)) / (1 + cos(pi (t - 1) / T)) *
    (r_{t-1} - floor) + floor`` from ``r_0 = start`` (SL core.py:26-39, ITOP core.py:22-31). The state
    is the last ``(t, r_t)``; advancing replays the recursion (Python floats, as torch does)."""

    def __init__(self, start: float, floor: float, total: int):
        self.start, self.floor, self.total = start, floor, max(total, 1)
        self.t, self.rate = 0, start

    def at(self, t: int) -> float:
        if t < self.t:
            raise ValueError(f"the prune-rate schedule only moves forward (at {self.t}, asked {t})")
        T, eta = self.total, self.floor
        while self.t < t:
            self.t += 1
            if (self.t - 1 - T) % (2 * T) == 0:  # torch's branch one step past T_max
                self.rate = self.rate + (self.start - eta) * (1 - math.cos(math.pi / T)) / 2
            else:
                self.rate = ((1 + math.cos(math.pi * self.t / T)) / (1 + math.cos(math.pi * (self.t - 1) / T))
                             * (self.rate - eta) + eta)
        return self.rate

    def state_dict(self) -> dict:
        return {"t": self.t, "rate": self.rate}

    def load_state_dict(self, state: dict) -> None:
        self.t, self.rate = state["t"], state["rate"]


# --------------------------------------------------------------------------- the hook


class ReallocationHook(UpdateHook):
    """One run's dynamic sparse training on ``schedule`` (:class:`~harness.pruning.schedules.Periodic`: the period,
    its overrides, the stop, the run's total steps (the cosine's ``T_max``), the target density (SM's expected count
    ``sum_l d_l n_l``, SL core.py:151-156), and each method's timing); ``generator`` draws every random choice."""

    def __init__(self, masks: MaskSet, p: DynamicParams, *, schedule: Periodic, generator: torch.Generator):
        self.masks, self.p, self.schedule = masks, p, schedule
        self.total = schedule.total
        self.gen = generator
        self.optimizer: torch.optim.Optimizer | None = None
        self.updates = 0
        self.threshold = p.threshold
        self.cosine = CosineRate(p.prune_rate, p.prune_rate_min, schedule.total)
        # SM's expected active count, summed layer by layer as SL does (core.py:151-156)
        self.baseline = 0.0
        for w, d in zip(masks.params.values(), layer_densities(masks, p.initial, schedule.target_density)):
            self.baseline += w.numel() * d
        self.adjusted_growth: float = 0  # SL core.py:107
        self.adjustments: list[float] = []  # SL core.py:108
        self.reactivation = Reactivation()
        self.hidden = p.regrow == "random"  # DSR: masked entries keep hidden values, forward sees m * w

    def begin(self) -> None:
        """A fresh run: the initial random mask at the target density, then :meth:`start`."""
        self.masks.set_masks_(initial_masks(self.masks, self.p, self.schedule.target_density, self.gen))
        self.start()

    def attach(self, model, optimizer) -> None:
        self.optimizer = optimizer

    def start(self) -> None:
        """Right after the initial mask: SM and SET-ITOP zero the masked weights (SL core.py:157, ITOP
        core.py:196); DSR keeps every hidden value (its model re-draws all of ``s`` at init,
        model.py:176-188, and only the forward pass masks it)."""
        if not self.hidden:
            self.masks.apply_()

    # -- the step
    def before_forward(self, step: int) -> None:
        if self.hidden:
            self.masks.stash_dense_()  # the forward pass sees m * w (DSR parameterized_tensors.py:246-250)

    def before_optimizer_step(self, step: int) -> None:
        if self.hidden:  # the hidden values come back; the gradient through m * w is m * grad
            self.masks.restore_dense_()
            with torch.no_grad():
                for name, w in self.masks.params.items():
                    if w.grad is not None:
                        w.grad.mul_(self.masks.masks[name])

    def after_optimizer_step(self, step: int) -> None:
        if not self.hidden:
            self._apply()  # SL core.py:279, ITOP core.py:214
        if self.schedule.is_update(step):
            old = {n: m.clone() for n, m in self.masks}
            {"random": self._dsr, "momentum": self._sparse_momentum, "set": self._set}[self.p.regrow](step + 1)
            self.updates += 1
            self.reactivation.add(sum(int((m & ~old[n]).sum()) for n, m in self.masks))

    @torch.no_grad()
    def _apply(self) -> None:
        """Masked weights to 0; SET-ITOP zeroes their momentum too (ITOP core.py:279-286)."""
        self.masks.apply_()
        if self.p.regrow == "set" and self.optimizer is not None:
            for name, w in self.masks.params.items():
                buf = self.optimizer.state.get(w, {}).get("momentum_buffer")
                if buf is not None:
                    buf.mul_(self.masks.masks[name])

    def effective_weights(self):
        return masked_view(self.masks, self.hidden)

    def finish(self) -> None:
        self.masks.apply_()  # the output is the sparse model m * w

    def _momentum(self, name: str) -> torch.Tensor:
        """SGD's momentum buffer, or Adam's m / (sqrt(v) + 1e-8) (SL core.py:516-524)."""
        state = self.optimizer.state.get(self.masks.params[name], {}) if self.optimizer is not None else {}
        if "exp_avg" in state:
            return state["exp_avg"] / (torch.sqrt(state["exp_avg_sq"]) + 1e-08)
        if state.get("momentum_buffer") is None:
            raise RuntimeError("Sparse Momentum needs an optimizer with momentum (SGD momentum or Adam)")
        return state["momentum_buffer"]

    # -- DSR (IntelAI/dynamic-reparameterization main.py:627-685, parameterized_tensors.py:182-239)
    @torch.no_grad()
    def _dsr(self, t: int) -> None:
        names = list(self.masks.params)
        new = {n: m.clone() for n, m in self.masks}
        active_before = sum(int(m.sum()) for m in new.values())
        pruned = {}
        n_pruned = np.zeros(len(names))
        for i, n in enumerate(names):
            flat = new[n].view(-1)
            active = torch.nonzero(flat).view(-1)
            drop = (self.masks.params[n].detach().reshape(-1)[active].abs() < self.threshold).nonzero().view(-1)
            if drop.numel() == active.numel():  # never empty a layer: its first active entry stays (:197-199)
                drop = drop[1:]
            pruned[n] = active[drop]
            flat[pruned[n]] = False
            n_pruned[i] = pruned[n].numel()
            self.masks.params[n].data.masked_fill_(~new[n], 0.0)  # masked hidden values to 0 (:112-115, :211)
        # regrowth in proportion to the surviving entries (main.py:639-674)
        nonzeros = np.array([float(new[n].sum()) for n in names])
        with np.errstate(invalid="ignore"):
            fraction = n_pruned / nonzeros
        # a layer without active entries (0 / 0) is left out of the mean and takes no share; DSR's
        # code would make every count NaN there (deviation dynamic_empty_layers)
        mean = fraction.mean() if not np.isnan(fraction).any() else np.nanmean(fraction)
        shares = np.clip(np.ones_like(fraction) * mean, 0.0, 1.0) * nonzeros
        shares /= shares.sum()
        grown = 0
        while grown < n_pruned.sum():
            left = n_pruned.sum() - grown
            counts = np.round(shares * left).astype("int32")  # half to even
            discrepancy = left - counts.sum()
            if discrepancy != 0:
                j = int(torch.randint(len(counts), (1,), generator=self.gen, device=self.gen.device))
                counts[j] = max(0, counts[j] + discrepancy)
            for i, n in enumerate(names):
                flat = new[n].view(-1)
                free = ~flat
                free[pruned[n]] = False  # not the entries this re-allocation pruned (:219-221)
                candidates = torch.nonzero(free).view(-1)
                k = min(int(counts[i]), candidates.numel())
                order = torch.randperm(candidates.numel(), generator=self.gen, device=self.gen.device)
                flat[candidates[order.to(candidates.device)][:k]] = True
                grown += k
        self.masks.set_masks_(new)
        # the threshold adapts toward the wanted count (main.py:680-685)
        wanted = self.p.prune_fraction * active_before
        total = n_pruned.sum()
        if total > (1 + self.p.tolerance) * wanted:
            self.threshold /= 2.0
        elif total < (1 - self.p.tolerance) * wanted:
            self.threshold *= 2.0

    # -- Sparse Momentum (TimDettmers/sparse_learning core.py:377-510, funcs.py:7-249)
    @torch.no_grad()
    def _sparse_momentum(self, t: int) -> None:
        names = list(self.masks.params)
        masks = self.masks.masks
        rate = self.cosine.at(t)
        # statistics (core.py:424-459): share = mean |momentum| over the active entries, normalised
        share, total_share = {}, 0.0
        for n in names:
            share[n] = self._momentum(n)[masks[n]].abs().mean().item()
            if not math.isnan(share[n]):
                total_share += share[n]
        if total_share != 0.0:
            share = {n: v / total_share for n, v in share.items()}
        nonzeros = {n: int(masks[n].sum()) for n in names}
        zeros = {n: masks[n].numel() - nonzeros[n] for n in names}
        # per-layer rate (core.py:359-375)
        rates = {}
        for n in names:
            sparsity = zeros[n] / float(masks[n].numel())
            dense_and_growing = sparsity < 0.2 and (1.0 / len(names)) / share[n] < 1.0
            rates[n] = min(sparsity, rate) if dense_and_growing else rate
        # magnitude pruning (funcs.py:56-114): the ceil(rate * active) smallest |w| of each layer
        new, removed = {}, 0
        for n in names:
            w = self.masks.params[n].detach()
            k = math.ceil(rates[n] * nonzeros[n])
            if k == 0:
                new[n] = (w != 0).contiguous()  # funcs.py:110 (a masked weight is 0)
            else:
                order = torch.sort(w.abs().reshape(-1)).indices  # the reference's own sort (ties: see above)
                new[n] = masks[n].clone()
                new[n].view(-1)[order[: zeros[n] + k]] = False  # the masked zeros sort first
            removed += nonzeros[n] - int(new[n].sum())
        # regrowth counts (core.py:461-497): ceil(share * (removed + adjustment)), capped at 0.99 of
        # the layer's free slots; the excess goes evenly to every layer, round after round
        regrowth: dict[str, float] = {}
        residual, mean_residual, rounds = 9999, 0, 0
        while residual > 0 and rounds < 1000:
            residual = 0
            for n in names:
                cap = 0.99 * (zeros[n] + math.ceil(rates[n] * nonzeros[n]))
                # a layer without active entries has no mean momentum (NaN): share 0, where SL's code
                # raises at math.ceil(NaN) (deviation dynamic_empty_layers)
                first = 0.0 if math.isnan(share[n]) else share[n]
                g = regrowth[n] if n in regrowth else math.ceil(first * (removed + self.adjusted_growth))
                g += mean_residual
                if g > cap:
                    regrowth[n] = cap
                    residual += g - cap
                else:
                    regrowth[n] = g
            mean_residual = residual / len(regrowth)
            rounds += 1
        # momentum growth (funcs.py:177-249): the masked entries (just-pruned included) with the
        # largest |momentum|, floor(regrowth) of them
        total_new = 0
        for n in names:
            mom = self._momentum(n)
            key = (mom * (~new[n]).to(mom.dtype)).abs().reshape(-1)
            order = torch.sort(key, descending=True).indices
            new[n].view(-1)[order[: math.floor(regrowth[n])]] = True
            total_new += int(new[n].sum())
        self.masks.set_masks_(new)
        self.masks.apply_()  # core.py:414: pruned weights to 0; a pruned-and-regrown one keeps its value
        # the growth correction for the next update (core.py:416-419)
        self.adjustments.append(self.baseline - total_new)
        self.adjusted_growth = (0.25 * self.adjusted_growth + 0.75 * (self.baseline - total_new)
                                + np.mean(self.adjustments))

    # -- SET-ITOP (Shiweiliuiiiiiii/In-Time-Over-Parameterization core.py:320-466)
    @torch.no_grad()
    def _set(self, t: int) -> None:
        rate = self.cosine.at(t)
        new, removed = {}, {}
        for n, m in self.masks:
            w = self.masks.params[n].detach()
            nonzeros = int(m.sum())
            k = math.ceil(rate * nonzeros)
            if k == 0:
                new[n] = (w != 0).contiguous()  # core.py:392
            else:  # everything at or below the (zeros + k)-th smallest |w| (core.py:389-401)
                values = torch.sort(w.abs().reshape(-1)).values
                new[n] = (w.abs() > values[m.numel() - nonzeros + k - 1].item()).contiguous()
            removed[n] = nonzeros - int(new[n].sum())
        for n, m in new.items():  # random growth in the same layer (core.py:457-466)
            free = int((~m).sum())
            if free == 0:
                continue
            draw = torch.rand(m.shape, generator=self.gen, device=self.gen.device).to(m.device) < removed[n] / free
            grown = m | draw
            if bool(grown.any()):
                new[n] = grown
        self.masks.set_masks_(new)
        self._apply()  # core.py:368

    # -- state
    def state_dict(self) -> dict:
        return {"updates": self.updates, "threshold": self.threshold, "generator": self.gen.get_state(),
                "cosine": self.cosine.state_dict(), "adjusted_growth": self.adjusted_growth,
                "adjustments": list(self.adjustments), **self.reactivation.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates, self.threshold = state["updates"], state["threshold"]
        self.cosine.load_state_dict(state["cosine"])
        self.adjusted_growth, self.adjustments = state["adjusted_growth"], list(state["adjustments"])
        self.reactivation.load_state_dict(state)
        self.gen.set_state(state["generator"])

    def metrics(self) -> dict:
        return {"mask_updates": self.updates, **self.reactivation.metrics()}

    def totals(self) -> dict:
        return {"mask_updates": self.updates, "reactivated_total": self.reactivation.total}
