"""AP's released code as a model for the lockstep tests: Martin1937/Activate-While-Pruning @ 95a063b2,
``resnet_20.py`` (the script; of ``utils_new.py`` it uses only the non-zero count for its CSV label, a directory
helper and plotting: its own ``original_initialization`` is resnet_20.py's, :411), rule by rule.

Own transcription, written from the code's behaviour (the repository has no licence: nothing is copied); every rule
cites ``resnet_20.py:<line>``. Pure torch, nothing from ``harness``. What it leaves out: argparse, loaders, tqdm,
the CSV, the test-set evaluations (eval mode: they change no weight), the ten unseeded runs, the NameError of
defect 1 (the CSV name), and the init itself (the caller supplies each cycle's init, as ``weight_init`` would draw
it: parameters only, buffers untouched).

Switches (:class:`Deviations`) turn on paper_configs/ap.yaml's declared deviations one by one; all off is the
released code. The lockstep test runs it with :data:`DECLARED` against the project's procedure.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class Deviations:
    """paper_configs/ap.yaml ``deviations`` as switches (False: the released code's rule)."""

    exact_base_count: bool = False  # ap_base_step_exact_k: remove round(rate * alive), not "< percentile"
    exact_n_ap: bool = False  # ap_exact_n_ap: remove exactly n_ap (ties: lower index), not "<= sorted[n_ap]"
    guard: bool = False  # ap_guard_ap_step: fewer than n_ap + 1 candidates -> remove them all, no IndexError
    enforce_mask: bool = False  # ap_enforce_mask_in_retrain: fresh SGD for the recorded retraining
    no_duplicate_pool: bool = False  # ap_no_duplicate_pool: each weight tensor in the pools once
    reset_bn_stats: bool = False  # ap_reset_bn_stats: re-init / rewind / reset also reset BN running stats
    bias_copy: bool = False  # ap_bias_reset_copy: resets copy the stored biases instead of aliasing them


CODE = Deviations()
DECLARED = Deviations(True, True, True, True, True, True, True)


# ----------------------------------------------------------------------------- the LR, per iteration


@dataclass(frozen=True)
class Schedule:
    """The code's LR constants: ``set_lr = 0.1`` (:37), slope ``set_lr / 20000`` (:39, :143) over the first 20,000
    iterations (:241), overrides from 0-based epoch 25 (``set_lr / 10``) and 32 (``set_lr / 100``) (:244-247),
    ``--lr`` 0 (:500). ``warmup_iters`` stands for both 20,000s (the slope's divisor and the warm-up length)."""

    set_lr: float = 0.1
    warmup_iters: int = 20000
    first_drop: int = 25
    second_drop: int = 32
    start_lr: float = 0.0


class LR:
    """The running LR of one training: the count and the LR start over at every training (:143-145 before the
    first, :190 before the recorded one; ``curr_lr = args.lr`` at epoch 0, :170-171, :193-194)."""

    def __init__(self, s: Schedule):
        self.s = s
        self.slope = s.set_lr / s.warmup_iters  # :143
        self.count = 0  # iteration_num, :145 / :190
        self.lr = s.start_lr  # curr_lr, :171 / :194

    def before_step(self, epoch: int) -> float:
        """:239-253, before every optimizer step: count up, add the slope while the count is <= the warm-up, then the
        epoch overrides (0-based ``iter_``), and the value goes into every param group."""
        self.count += 1
        if self.count <= self.s.warmup_iters:
            self.lr = self.lr + self.slope
        if epoch >= self.s.first_drop:
            self.lr = self.s.set_lr / 10
        if epoch >= self.s.second_drop:
            self.lr = self.s.set_lr / 100
        return self.lr


# ----------------------------------------------------------------------------- masks and training


def weight_names(model: nn.Module) -> list[str]:
    """The maskable set: every parameter whose name contains ``weight`` (:152-153, :304-305, :399-400), BN gamma
    and the linear weight included, in ``named_parameters`` order."""
    return [n for n, _ in model.named_parameters() if "weight" in n]


def make_sgd(model: nn.Module, s: Schedule) -> torch.optim.Optimizer:
    """:117 and :160: SGD, LR ``--lr``, momentum 0.9, weight decay 5e-4 on every parameter."""
    return torch.optim.SGD(model.parameters(), lr=s.start_lr, momentum=0.9, weight_decay=5e-4)


def train_epochs(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator, epochs: int,
                 steps_per_epoch: int, lr: LR, on_step: Callable[[], None] | None = None) -> list[float]:
    """One training (:168-182 / :191-203, the ``train`` function :230-276): per epoch, every batch of the loader; per
    batch: the LR rule, zero the gradients, forward, cross-entropy (:118), backward, the gradient of every
    ``*weight`` entry that is exactly 0 set to 0 (:268-273; this is all the masking there is), step. Returns the LR of
    every step; ``on_step()`` is called after every optimizer step (the lockstep's per-step comparison)."""
    model.train()  # :233
    lrs = []
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            x, y = next(batches)
            value = lr.before_step(epoch)
            for g in optimizer.param_groups:
                g["lr"] = value
            lrs.append(value)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if "weight" in n:
                        p.grad = torch.where(p == 0, torch.zeros_like(p.grad), p.grad)
            optimizer.step()
            if on_step is not None:
                on_step()
    return lrs


def _pools(model: nn.Module, dev: Deviations, prev: dict[str, torch.Tensor] | None = None):
    """The alive values the code collects: per ``*weight`` parameter its nonzero entries (:305-307, :347-352); the
    append sits outside the ``weight`` test (:308-311, :354-359), so every bias appends the previous weight's values
    once more (defect 4) unless ``no_duplicate_pool``. With ``prev``: the previous state's values at the same
    positions (the AP step's pairs)."""
    cur, old, last = [], [], None
    for n, p in model.named_parameters():
        if "weight" in n:
            t = p.detach()
            alive = t != 0
            last = (t[alive], prev[n][alive] if prev is not None else None)
        elif dev.no_duplicate_pool:
            continue
        cur.append(last[0])
        if prev is not None:
            old.append(last[1])
    return torch.cat(cur), (torch.cat(old) if prev is not None else None)


def percentile_linear(values: torch.Tensor, q: int) -> torch.Tensor:
    """``np.percentile(values, q)`` for float32 ``values`` and an integer ``q`` (:313), its default linear method:
    virtual index ``n * f + (1 - f) - 1`` with ``f = q / 100`` in float64, then numpy's two-sided lerp in the values'
    float32 (the weight a weak Python float). A float32 0-d tensor."""
    a = torch.sort(values).values
    n, f = a.numel(), q / 100
    h = n * f + (1 + f * (1 - 1 - 1)) - 1
    lo = math.floor(h)
    hi = min(lo + 1, n - 1)
    t = h - lo
    lo_v, hi_v = a[lo], a[hi]
    diff = hi_v - lo_v
    return hi_v - diff * (1 - t) if t >= 0.5 else lo_v + diff * t


def base_step(model: nn.Module, mask: dict[str, torch.Tensor], percent: float, dev: Deviations) -> tuple[int, int]:
    """``prune_by_percentile_lt`` (:297-334): one global percentile of |w| over the alive pool; every entry with
    ``|w| < percentile`` is masked (:324) and zeroed (:326). Returns (pool size before the step, entries masked).
    ``exact_base_count``: remove exactly ``round(U * percent / 100)`` of the ``U`` alive entries by |w|
    (ties: the lower index in ``named_parameters`` order)."""
    pool, _ = _pools(model, dev)
    names = weight_names(model)
    params = dict(model.named_parameters())
    before = sum(int(mask[n].sum()) for n in names)
    if dev.exact_base_count:
        flat = torch.cat([torch.where(params[n].detach() != 0, params[n].detach().abs().double(),
                                      torch.tensor(-math.inf, dtype=torch.float64)).reshape(-1) for n in names])
        alive = int((flat > -math.inf).sum())
        keep = alive - round(alive * percent / 100)
        kept = torch.zeros(flat.numel(), dtype=torch.bool)
        kept[torch.argsort(flat, descending=True, stable=True)[:keep]] = True
        start = 0
        for n in names:
            size = params[n].numel()
            mask[n] = mask[n] * kept[start:start + size].reshape(params[n].shape).to(mask[n].dtype)
            start += size
    else:
        p_value = percentile_linear(pool.abs(), percent)
        for n in names:
            w = params[n].detach()
            mask[n] = torch.where(w.abs() < p_value, torch.zeros_like(mask[n]), mask[n])
    with torch.no_grad():
        for n in names:
            params[n].mul_(mask[n])
    return pool.numel(), before - sum(int(mask[n].sum()) for n in names)


def n_ap_of(pool_size: int, percent_ap: float) -> int:
    """:332: ``int(pool size * (percent_ap / 100))``, the pool collected before the base step."""
    return int(pool_size * (percent_ap / 100))


def ap_step(model: nn.Module, mask: dict[str, torch.Tensor], prev: dict[str, torch.Tensor], n_ap: int,
            dev: Deviations) -> int:
    """``prune_by_percentile_ap`` (:337-390): the pairs (current, cycle-start) of the alive entries (:346-362), the
    negative ones are the candidates (:364-367), their movements ``|cur - prev|`` sorted, the value at 0-based index
    ``n_ap`` is the threshold (:369), and every entry with ``|w - prev| <= threshold`` and ``w < 0`` is masked
    (:385) and zeroed (:388): ``n_ap + 1`` entries plus ties; IndexError with ``<= n_ap`` candidates (defect 12).
    ``exact_n_ap``: exactly ``min(n_ap, candidates)`` smallest movements, ties by the lower index. ``guard``: with
    ``<= n_ap`` candidates all of them. Returns the entries masked."""
    names = weight_names(model)
    params = dict(model.named_parameters())
    before = sum(int(mask[n].sum()) for n in names)
    cur, old = _pools(model, dev, prev)
    neg = cur < 0
    moves = torch.sort((cur[neg] - old[neg]).abs()).values
    if dev.exact_n_ap:
        flat_w = torch.cat([params[n].detach().reshape(-1) for n in names])
        flat_prev = torch.cat([prev[n].reshape(-1) for n in names])
        cand = flat_w < 0  # alive (nonzero) and negative
        key = torch.where(cand, (flat_w - flat_prev).abs().double(), torch.tensor(math.inf, dtype=torch.float64))
        k = min(n_ap, int(cand.sum()))
        gone = torch.zeros(flat_w.numel(), dtype=torch.bool)
        gone[torch.argsort(key, stable=True)[:k]] = True
        start = 0
        for n in names:
            size = params[n].numel()
            g = gone[start:start + size].reshape(params[n].shape)
            mask[n] = torch.where(g, torch.zeros_like(mask[n]), mask[n])
            start += size
    else:
        if moves.numel() <= n_ap:
            if not dev.guard:
                raise IndexError(f"index {n_ap} is out of bounds for {moves.numel()} candidates (resnet_20.py:369)")
            threshold = math.inf
        else:
            threshold = float(moves[n_ap])
        for n in names:
            w = params[n].detach()
            hit = ((w - prev[n]).abs().double() <= threshold) & (w < 0)
            mask[n] = torch.where(hit, torch.zeros_like(mask[n]), mask[n])
    with torch.no_grad():
        for n in names:
            params[n].mul_(mask[n])
    return before - sum(int(mask[n].sum()) for n in names)


def reset_bn_buffers(model: nn.Module) -> None:
    """``ap_reset_bn_stats``: the running statistics a freshly built BatchNorm has."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()


def original_initialization(model: nn.Module, mask: dict[str, torch.Tensor], initial: dict[str, torch.Tensor],
                            dev: Deviations) -> None:
    """:411-422: every ``*weight`` becomes ``mask * initial``; every ``*bias`` takes the stored tensor itself (aliased,
    so training it later changes the stored one: defect 6) unless ``bias_copy``. Buffers are left alone (defect 13)
    unless ``reset_bn_stats``."""
    for n, p in model.named_parameters():
        if "weight" in n:
            p.data = mask[n] * initial[n]
        if "bias" in n:
            p.data = initial[n].clone() if dev.bias_copy else initial[n]
    if dev.reset_bn_stats:
        reset_bn_buffers(model)


# ----------------------------------------------------------------------------- the cycles


@dataclass
class Event:
    """What the lockstep compares after each piece: ``what`` is ``train`` (cycle 0, or a cycle's first training),
    ``prune`` (after the base and AP steps, before the reset) or ``retrain`` (the recorded training)."""

    what: str
    cycle: int
    state: dict[str, torch.Tensor]
    mask: dict[str, torch.Tensor]
    lrs: list[float] | None = None
    start: dict[str, torch.Tensor] | None = None  # the state the training started from
    counts: dict | None = None
    steps: list[dict[str, torch.Tensor]] | None = None  # the state after every optimizer step (``trace``)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def run_cycles(model: nn.Module, cycles: int, epochs: int, steps_per_epoch: int, batches: Callable[[str], Iterator],
               reinit: Callable[[nn.Module, int], None] | None, schedule: Schedule = Schedule(),
               percent: int = 20, percent_ap: int = 2, dev: Deviations = CODE, trace: bool = False) -> list[Event]:
    """The cycle loop of ``main`` (:113-203) on ``model`` (already initialised, :107): cycle 0 trains densely; each
    later cycle re-initialises (``reinit(model, cycle)``, the code's ``weight_init`` :148, then the stored init is
    taken :149 and the mask applied :152-156) or, with ``reinit`` None (``--prune_type lt``), rewinds to the stored
    init (:159); a fresh SGD (:160); the first training (state at its start kept, :172); the base step with
    ``percent - percent_ap`` (:140, :188) and the AP step (:189), which ends with the reset to the stored init times
    the mask (:392); the recorded training on the same optimizer (:191-203; a fresh one with ``enforce_mask``).
    ``batches(name)`` gives each training's batches: ``pretrain`` for cycle 0, ``cycles/cycle<k>/train`` and
    ``cycles/cycle<k>/retrain``. ``trace``: keep the state after every optimizer step in each training's event."""
    names = weight_names(model)
    params = dict(model.named_parameters())
    mask = {n: torch.ones_like(params[n]) for n in names}  # :114, :395-409
    initial = copy.deepcopy(model.state_dict())  # :109
    optimizer = make_sgd(model, schedule)  # :117
    events: list[Event] = []
    for cycle in range(cycles + 1):
        lr = LR(schedule)  # :142-145
        if cycle != 0:
            if reinit is not None:
                reinit(model, cycle)  # :148
                if dev.reset_bn_stats:
                    reset_bn_buffers(model)
                initial = copy.deepcopy(model.state_dict())  # :149
                for n in names:
                    params[n].data = params[n].data * mask[n]  # :152-156
            else:
                original_initialization(model, mask, initial, dev)  # :159
            optimizer = make_sgd(model, schedule)  # :160
        start = _snapshot(model)  # model_prev, :172
        name = "pretrain" if cycle == 0 else f"cycles/cycle{cycle}/train"
        steps: list = []
        on_step = (lambda: steps.append(_snapshot(model))) if trace else None
        lrs = train_epochs(model, optimizer, batches(name), epochs, steps_per_epoch, lr, on_step)
        events.append(Event("train", cycle, _snapshot(model), {n: m.clone() for n, m in mask.items()}, lrs, start,
                            steps=steps if trace else None))
        if cycle == 0:
            continue
        alive_before = sum(int(mask[n].sum()) for n in names)
        pool_size, base_pruned = base_step(model, mask, percent - percent_ap, dev)  # :188
        n_ap = n_ap_of(pool_size, percent_ap)
        prev = {n: start[n] for n in names}
        ap_removed = ap_step(model, mask, prev, n_ap, dev)  # :189
        counts = {"alive_before": alive_before, "pool_size": pool_size, "n_ap": n_ap, "base_pruned": base_pruned,
                  "ap_removed": ap_removed}
        events.append(Event("prune", cycle, _snapshot(model), {n: m.clone() for n, m in mask.items()},
                            counts=counts))
        original_initialization(model, mask, initial, dev)  # :392
        lr = LR(schedule)  # :190, :194
        if dev.enforce_mask:
            optimizer = make_sgd(model, schedule)
        start = _snapshot(model)
        steps = []
        lrs = train_epochs(model, optimizer, batches(f"cycles/cycle{cycle}/retrain"), epochs, steps_per_epoch, lr,
                           on_step)
        events.append(Event("retrain", cycle, _snapshot(model), {n: m.clone() for n, m in mask.items()}, lrs, start,
                            counts, steps if trace else None))
    return events
