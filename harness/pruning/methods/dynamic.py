"""Dynamic sparse training at a fixed density: DSR (Mostafa & Wang 2019) and Sparse Momentum
(Dettmers & Zettlemoyer 2019), DPF's dynamic baselines (dpf.md section 4).

The model starts from a random mask at the target density (allocation ``initial``: uniform or
ERK over the prunable set) and trains with masked weights re-zeroed after every step (the
gradient of a pruned weight is discarded). Every ``update_every`` the mask is re-allocated:

* ``regrow: random`` (DSR): prune every active weight with ``|w| < H`` (one global threshold);
  the threshold adapts so that about ``prune_fraction`` of the active weights go per update
  (``H`` doubles when fewer than ``(1 - tolerance)`` of that went, halves when more than
  ``(1 + tolerance)``); the same number regrow at random masked positions, spread over layers in
  proportion to each layer's surviving weights;
* ``regrow: momentum`` (SM): every layer prunes the fraction ``p_t`` of its active weights with the
  smallest ``|w|``, ``p_t = prune_rate * (1 + cos(pi * u / U)) / 2`` decaying over the ``U``
  updates; the same total regrows, spread over layers in proportion to each layer's mean
  momentum magnitude over its active weights, at the masked positions with the largest momentum
  magnitude.

Regrown weights start at 0. ``reactivated`` counts the regrown entries since the previous row, as for DPF.
Reallocation stops at ``stop`` (a duration; default: never). Rows are on the ``epoch`` axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from harness.config.expand import RunSpec
from harness.pruning import scores
from harness.pruning.masks import MaskSet
from harness.pruning.methods.stage import Reactivation, SingleStage, StageHook, run_stage
from harness.train import stage_seed
from harness.units import duration_steps, is_duration, steps_per_epoch


@dataclass(frozen=True)
class DynamicParams:
    regrow: Literal["random", "momentum"]  # DSR | Sparse Momentum
    update_every: str  # duration between re-allocations (e.g. "100it", "1ep")
    initial: Literal["uniform", "erk"]  # layer densities of the initial random mask
    prune_rate: float = 0.5  # SM: initial fraction of each layer's active weights pruned per update
    prune_fraction: float = 0.0  # DSR: wanted fraction of the active weights pruned per update
    threshold: float = 0.001  # DSR: initial global magnitude threshold H
    tolerance: float = 0.1  # DSR: band around the wanted count before H adapts
    stop: str | None = None  # no re-allocation after this duration


class ReallocationHook(StageHook):
    def __init__(self, masks: MaskSet, p: DynamicParams, every: int, stop: int, updates_total: int,
                 generator: torch.Generator):
        self.masks, self.p, self.every, self.stop, self.total = masks, p, every, stop, updates_total
        self.gen = generator
        self.optimizer: torch.optim.Optimizer | None = None
        self.updates = 0
        self.threshold = p.threshold
        self.reactivation = Reactivation()

    def attach(self, model, optimizer) -> None:
        self.optimizer = optimizer

    def after_optimizer_step(self, step: int) -> None:
        t = step + 1
        if t % self.every == 0 and t <= self.stop:
            self._reallocate()
        self.masks.apply_()

    # -- one re-allocation
    def _momentum(self, name: str) -> torch.Tensor:
        state = self.optimizer.state.get(self.masks.params[name], {}) if self.optimizer is not None else {}
        buf = state.get("momentum_buffer", state.get("exp_avg"))
        if buf is None:
            raise RuntimeError("Sparse Momentum needs an optimizer with momentum (SGD momentum or Adam)")
        return buf.detach().abs()

    @torch.no_grad()
    def _reallocate(self) -> None:
        masks, names = self.masks.masks, list(self.masks.params)
        w = {n: self.masks.params[n].detach().abs() for n in names}
        new = {n: m.clone() for n, m in masks.items()}
        if self.p.regrow == "random":
            removed = {n: int((new[n] & (w[n] < self.threshold)).sum()) for n in names}
            for n in names:
                new[n] &= ~(w[n] < self.threshold)
            active = sum(int(m.sum()) for m in masks.values())
            wanted = self.p.prune_fraction * active
            pruned = sum(removed.values())
            if pruned < (1 - self.p.tolerance) * wanted:
                self.threshold *= 2
            elif pruned > (1 + self.p.tolerance) * wanted:
                self.threshold /= 2
            weights = [float(new[n].sum()) for n in names]  # surviving weights per layer
        else:
            rate = self.p.prune_rate * (1 + math.cos(math.pi * self.updates / max(self.total, 1))) / 2
            pruned = 0
            weights = []
            for n in names:
                k = round(rate * int(new[n].sum()))
                if k:
                    key = torch.where(new[n], w[n], torch.full_like(w[n], math.inf)).reshape(-1)
                    drop = torch.topk(key, k, largest=False).indices
                    new[n].view(-1)[drop] = False
                pruned += k
                mom = self._momentum(n)
                weights.append(float(mom[masks[n]].mean()) if bool(masks[n].any()) else 0.0)
        regrown = self._regrow(new, names, pruned, weights)
        self.masks.set_masks_(new)
        self.updates += 1
        self.reactivation.add(regrown)

    def _regrow(self, new: dict, names: list[str], count: int, weights: list[float]) -> int:
        """Spread ``count`` regrowths over layers in proportion to ``weights`` (capped by the free
        positions, the rest going to the next layers), then place them in each layer."""
        free = [int((~new[n]).sum()) for n in names]
        total_w = sum(weights) or 1.0
        share = [min(free[i], int(count * weights[i] / total_w)) for i in range(len(names))]
        left = count - sum(share)
        for i in sorted(range(len(names)), key=lambda i: -weights[i]):  # rounding remainder
            extra = min(left, free[i] - share[i])
            share[i] += extra
            left -= extra
        regrown = 0
        for n, k in zip(names, share):
            if not k:
                continue
            candidates = ~new[n]
            if self.p.regrow == "random":
                key = torch.rand(new[n].shape, generator=self.gen, device=new[n].device)
            else:
                key = self._momentum(n).to(torch.float32)
            key = torch.where(candidates, key, torch.full_like(key, -math.inf)).reshape(-1)
            grow = torch.topk(key, k).indices
            new[n].view(-1)[grow] = True
            w = self.masks.params[n].data  # regrown weights start at 0 (any memory format: channels_last)
            w.masked_fill_(torch.zeros(w.numel(), dtype=torch.bool, device=w.device).index_fill_(0, grow, True).view(w.shape), 0.0)
            regrown += k
        return regrown

    def state_dict(self) -> dict:
        return {"updates": self.updates, "threshold": self.threshold, "generator": self.gen.get_state(),
                **self.reactivation.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates, self.threshold = state["updates"], state["threshold"]
        self.reactivation.load_state_dict(state)
        self.gen.set_state(state["generator"])

    def metrics(self) -> dict:
        return {"mask_updates": self.updates, **self.reactivation.metrics()}


class Dynamic(SingleStage):
    name = "dynamic"
    Params = DynamicParams
    needs_sparsity = True
    description = "dynamic sparse training at a fixed density: prune and regrow (DSR, Sparse Momentum)"

    def check(self, p: DynamicParams, err) -> None:
        for name in ("update_every", "stop"):
            value = getattr(p, name)
            if value is not None and not is_duration(value):
                err(name, f"expected a duration like '100it' or '1ep', got {value!r}")
        if not 0 <= p.prune_rate < 1:
            err("prune_rate", f"expected a fraction in [0, 1), got {p.prune_rate}")
        if p.regrow == "random" and not 0 < p.prune_fraction < 1:
            err("prune_fraction", f"expected a fraction in (0, 1) for DSR, got {p.prune_fraction}")
        if p.threshold <= 0 or p.tolerance < 0:
            err("threshold", "expected a positive threshold and a tolerance >= 0")

    def summary(self, spec: RunSpec) -> str:
        p = spec.params
        what = "DSR (adaptive threshold, random regrowth)" if p.regrow == "random" else "Sparse Momentum"
        return f"{what}: {p.initial} random mask at the target, re-allocated every {p.update_every}"

    def run(self, spec: RunSpec, ctx, d: Path) -> list[dict]:
        from harness.experiment import fresh_model, get_data

        p, t = spec.params, spec.training
        data = get_data(spec.dataset, ctx)
        model = fresh_model(spec, ctx.torch_device)
        masks = MaskSet.for_model(model, spec.prunable)
        gen = torch.Generator(device=data.device).manual_seed(stage_seed(spec.seed, "mask"))
        if not (d / "checkpoint.pt").exists():
            inputs = masks.score_inputs(model, generator=gen)
            masks.select_(scores.compute("random", inputs), p.initial,
                          density=1.0 - (spec.target_sparsity or 0.0), eligible="all")
            masks.apply_()
        spe = steps_per_epoch(data.n_train, t.batch_size, t.drop_last)
        total = duration_steps(t.pretrain, spe)
        every = max(1, duration_steps(p.update_every, spe))
        stop = duration_steps(p.stop, spe) if p.stop else total
        hook = ReallocationHook(masks, p, every, stop, updates_total=stop // every, generator=gen)
        return run_stage(spec, ctx, d, model, masks, hook)
