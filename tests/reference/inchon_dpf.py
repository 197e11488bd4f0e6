"""A transcription of the third-party DPF code, INCHEON-CHO/Dynamic_Model_Pruning_with_Feedback @ deb281e8
(no licence: nothing is copied, every rule is re-written and cites the file and line it models), plus the
two baselines the DPF paper runs on the same loop (dpf.md section 4): Incremental (Zhu & Gupta gradual
magnitude pruning, i.e. DPF without feedback) and One-shot P+FT.

It models the reference's *rules*, not its scripts: no argparse, no loaders, no DataParallel. The batches
are passed in (the lockstep tests feed it the batches the project's loop draws). Nothing here imports
``harness``.

Rules and where they come from (``main.py`` etc. are INCHEON's files):

* masked convolution, straight-through: the forward pass uses ``w * mask``; the backward returns the
  incoming gradient to ``w`` unchanged (``pruning/dpf/mnn.py:7-14`` the autograd function, ``:17-26`` the
  conv that calls it with its ``mask``); every conv of the pruning ResNet is such a conv, the first one and
  the 1x1 shortcuts included (``pruning/models/resnet_mask.py:9-17``); the Linear head is a plain Linear.
* importance: ``|w|`` (``--prune-imp L1``) or ``w ** 2`` (``L2``, the README's DPF command), read from the
  weight itself, i.e. the dense weight (``pruning/utils.py:15-18`` and ``:40-43``), over every 4-d
  parameter that is not a mask (``pruning/utils.py:10-11``), concatenated in parameter order.
* threshold: the importances sorted ascending, the value at 0-based position ``int(N * rate)``
  (``pruning/utils.py:30``); a weight stays if its importance is strictly greater (``pruning/utils.py:48``).
  (``get_weight_threshold`` also reads every weight's ``.grad`` (``pruning/utils.py:13``), unused for L1/L2:
  it exists from the second iteration on, so a ``--prune-freq 1`` run would fail at iteration 0; not
  modelled.)
* gating and target (``main.py:243-251``, evaluated before the forward pass of the iteration): with the
  global 0-based iteration counter ``it`` (``main.py:115-116``, ``:277``) and 0-based ``epoch``, update when
  ``(it + 1) % prune_freq == 0 and (epoch + 1) <= milestones[1]``, to the sparsity
  ``rate - rate * (1 - it / (milestones[1] * len(loader))) ** 3``.
* optimiser: ``SGD(model.parameters(), lr, momentum, weight_decay, nesterov)`` over the dense weights
  (``main.py:70-72``), ``zero_grad; backward; step`` every iteration (``main.py:264-266``); the LR
  scheduler is a ``MultiStepLR`` over epochs (``utils.py:175-176``) stepped once after every epoch
  (``main.py:150``).
* evaluation: ``model.eval()`` and the same masked forward under ``no_grad`` (``main.py:296-311``): the dense
  weights are never touched by it.

Declared deviations of the project (``paper_configs/dpf.yaml`` ``deviations``) that change a rule modelled
here have a switch, so a test can run "reference + declared deviations" and also measure each one:

* ``exact_k`` (``dpf_exact_k``): keep exactly ``round((1 - rate) * N)`` weights, the highest importances,
  ties to the lower index in the concatenation order, instead of ``> sorted[int(N * rate)]``.

The other declared deviations change nothing in this model: ``mask_mechanism`` (the project writes
``m * w`` into the weights around the forward/backward pass instead of the autograd function: it is
claimed to be the same gradient and the same update, which the lockstep test checks), ``dpf_seeded``,
``gpu_data_pipeline`` (the batches are given), ``dpf_final_epoch_metric`` and ``dpf_eval_every_epoch``
(reporting).

Incremental (``feedback=False``): the sheet's semantics (dpf.md section 4 table, "Incremental": the cubic
schedule of section 1.3 with global magnitude masks, pruned weights not re-activated, the gradient
masked, "DPF without feedback") on INCHEON's loop, gating, target and threshold rule above. Two rules
change, both from that table: the forward uses the ordinary product ``w * mask``, whose backward
multiplies the gradient by the mask (instead of ``mnn.py:13-14``'s identity), and the importance is that
of the masked weight ``m * w`` (a pruned entry scores 0 and can never pass the strict threshold, so it is
never re-activated: the masks are nested). The dense values of pruned entries are left as the optimiser
makes them (weight decay and momentum still move them); they are never seen again.

One-shot P+FT (dpf.md section 4 table: "Train dense. Prune once to the target s by global magnitude.
Fine-tune with the mask fixed."): dense training is INCHEON's loop with ``--prune`` off (``main.py:52-56``,
plain convs), then one application of the threshold rule above to the dense weights at rate ``s``, then
fine-tuning on the masked product (gradient masked) with a fresh optimiser.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class Masker(torch.autograd.Function):
    """``w * mask`` forward; the gradient goes to ``w`` unchanged (pruning/dpf/mnn.py:7-14)."""

    @staticmethod
    def forward(ctx, w, mask):
        return w * mask

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class MaskConv2d(nn.Conv2d):
    """A Conv2d with a 0/1 float ``mask`` of its weight's shape (pruning/dpf/mnn.py:17-26). INCHEON holds the
    mask as a ``Parameter`` with ``requires_grad=False`` (mnn.py:22): it has no gradient, so SGD skips it; a
    buffer here. ``straight_through`` False: the ordinary product (Incremental, One-shot fine-tuning).
    ``seen`` keeps the masked weight of the latest forward pass for the lockstep comparison."""

    straight_through: bool = True

    def forward(self, x):
        w = Masker.apply(self.weight, self.mask) if self.straight_through else self.weight * self.mask
        self.seen = w.detach()
        return self._conv_forward(x, w, self.bias)


def install_masks(model: nn.Module, straight_through: bool) -> list[MaskConv2d]:
    """Make every Conv2d of ``model`` a masked conv with an all-ones mask (resnet_mask.py:9-17: all of them);
    in place, so the parameters (and an optimiser built on them) stay the same objects."""
    convs = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.__class__ = MaskConv2d
            m.register_buffer("mask", torch.ones_like(m.weight))
            m.straight_through = straight_through
            convs.append(m)
    return convs


def importance(w: torch.Tensor, kind: str) -> np.ndarray:
    """pruning/utils.py:15-18: L1 = |w|, L2 = w ** 2, in the weight's dtype (float32), as NumPy."""
    w = w.detach().reshape(-1).cpu()
    if kind == "L1":
        return w.abs().numpy()
    if kind == "L2":
        return w.pow(2).numpy()
    raise ValueError(kind)


def weight_threshold(scores: list[np.ndarray], rate: float) -> np.float32:
    """pruning/utils.py:25-31: ascending sort of every importance, the value at 0-based ``int(N * rate)``."""
    flat = np.concatenate(scores)
    return np.sort(flat)[int(len(flat) * rate)]


def keep_above(scores: list[np.ndarray], threshold) -> list[np.ndarray]:
    """pruning/utils.py:48: a weight stays where its importance is strictly greater than the threshold."""
    return [s > threshold for s in scores]


def keep_exact(scores: list[np.ndarray], keep: int) -> list[np.ndarray]:
    """Deviation ``dpf_exact_k``: the ``keep`` highest importances over the concatenation, ties to the lower
    index (a stable sort of the negated importances)."""
    flat = np.concatenate(scores)
    order = np.argsort(-flat, kind="stable")
    sel = np.zeros(flat.shape, dtype=bool)
    sel[order[:keep]] = True
    return np.split(sel, np.cumsum([len(s) for s in scores])[:-1])


@dataclass
class Update:
    """One mask update: iteration, target sparsity, entries kept, entries that came back / went."""

    iteration: int
    rate: float
    kept: int
    regrown: int
    pruned: int


@dataclass
class InchonDPF:
    """INCHEON's ``train()`` loop with pruning on (main.py:219-282), one iteration per :meth:`iteration`.

    ``milestones`` are epochs (``--milestones``), ``iters_per_epoch`` is ``len(train_loader)``; ``rate`` is
    ``--prune-rate``, ``freq`` ``--prune-freq``, ``imp`` ``--prune-imp``. ``feedback`` False: Incremental.
    """

    model: nn.Module
    rate: float
    freq: int
    milestones: tuple[int, int]
    iters_per_epoch: int
    lr: float
    momentum: float
    weight_decay: float
    nesterov: bool
    gamma: float = 0.1
    imp: str = "L2"
    feedback: bool = True
    exact_k: bool = False  # deviation dpf_exact_k
    iterations: int = 0
    updates: list[Update] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.convs = install_masks(self.model, straight_through=self.feedback)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=self.momentum,
                                         weight_decay=self.weight_decay, nesterov=self.nesterov)  # main.py:70-72
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, list(self.milestones), self.gamma)
        self.model.train()  # main.py:231

    # -- the rules, one method each (a planted difference overrides one of them)
    @property
    def epoch(self) -> int:
        return self.iterations // self.iters_per_epoch

    def due(self) -> bool:
        """main.py:244."""
        return (self.iterations + 1) % self.freq == 0 and (self.epoch + 1) <= self.milestones[1]

    def target(self) -> float:
        """main.py:245 (t0 = 0, t_end = milestones[1] * len(loader))."""
        return self.rate - self.rate * (1 - self.iterations / (self.milestones[1] * self.iters_per_epoch)) ** 3

    def scores(self) -> list[np.ndarray]:
        """DPF: the dense weights (utils.py:12, 41); Incremental: the masked ones (pruned entries score 0)."""
        return [importance(c.weight if self.feedback else c.weight * c.mask, self.imp) for c in self.convs]

    def keep_count(self, rate: float, n: int) -> int:
        """dpf_exact_k: round((1 - s) * N) (Incremental: never above what is kept now, no re-activation)."""
        k = round((1.0 - rate) * n)
        if not self.feedback:
            k = min(k, int(sum(int(c.mask.sum()) for c in self.convs)))
        return k

    def select(self, rate: float) -> list[np.ndarray]:
        scores = self.scores()
        if self.exact_k:
            return keep_exact(scores, self.keep_count(rate, sum(len(s) for s in scores)))
        return keep_above(scores, weight_threshold(scores, rate))

    # -- the loop
    @torch.no_grad()
    def prune(self) -> None:
        """main.py:243-251 (unstructured branch): threshold, then every mask rewritten (utils.py:34-48)."""
        rate = self.target()
        new = self.select(rate)
        regrown = pruned = 0
        for c, keep in zip(self.convs, new):
            m = torch.from_numpy(keep.reshape(tuple(c.mask.shape))).to(c.mask)
            regrown += int(((m > 0) & (c.mask == 0)).sum())
            pruned += int(((m == 0) & (c.mask > 0)).sum())
            c.mask.copy_(m)  # only the mask: the dense weight keeps its value
        self.updates.append(Update(self.iterations, rate, self.kept(), regrown, pruned))

    def iteration(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One pass of main.py:235-277 on the batch ``(x, y)``."""
        if self.due():
            self.prune()
        out = self.model(x)  # main.py:254
        loss = F.cross_entropy(out, y)  # main.py:255 (nn.CrossEntropyLoss)
        self.optimizer.zero_grad()  # main.py:264-266
        loss.backward()
        self.optimizer.step()
        self.iterations += 1  # main.py:277
        if self.iterations % self.iters_per_epoch == 0:
            self.scheduler.step()  # main.py:150, after the epoch's training and validation
        return loss.detach()

    @torch.no_grad()
    def evaluate(self, batches) -> tuple[float, float]:
        """main.py:285-330 as (accuracy, mean cross-entropy): eval mode, masked forward, weights untouched."""
        self.model.eval()
        correct, loss_sum, n = 0, 0.0, 0
        for x, y in batches:
            out = self.model(x)
            correct += int((out.argmax(1) == y).sum())
            loss_sum += float(F.cross_entropy(out, y, reduction="sum"))
            n += y.numel()
        self.model.train()
        return correct / n, loss_sum / n

    # -- what the lockstep test reads
    def masks(self) -> list[torch.Tensor]:
        return [c.mask.bool() for c in self.convs]

    def seen(self) -> list[torch.Tensor]:
        """The masked weights of the latest forward pass."""
        return [c.seen for c in self.convs]

    def kept(self) -> int:
        return int(sum(int(c.mask.sum()) for c in self.convs))

    def density(self) -> float:
        return self.kept() / sum(c.mask.numel() for c in self.convs)

    def regrown_total(self) -> int:
        return sum(u.regrown for u in self.updates)


@dataclass
class OneShot:
    """One-shot P+FT (dpf.md section 4 table) on INCHEON's pieces: dense SGD training (main.py:70-72,
    254-266 with ``--prune`` off), one threshold-rule pruning of the dense conv weights at ``rate``
    (utils.py:8-48), fine-tuning on the masked product with a fresh SGD at ``finetune_lr`` (constant)."""

    model: nn.Module
    lr: float
    momentum: float
    weight_decay: float
    nesterov: bool
    milestones: tuple[int, ...]
    iters_per_epoch: int
    gamma: float = 0.1
    imp: str = "L1"
    exact_k: bool = False
    iterations: int = 0

    def __post_init__(self) -> None:
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=self.momentum,
                                         weight_decay=self.weight_decay, nesterov=self.nesterov)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, list(self.milestones), self.gamma)
        self.convs: list[MaskConv2d] = []
        self.model.train()

    def _step(self, x, y) -> torch.Tensor:
        loss = F.cross_entropy(self.model(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def dense_iteration(self, x, y) -> torch.Tensor:
        loss = self._step(x, y)
        self.iterations += 1
        if self.iterations % self.iters_per_epoch == 0:
            self.scheduler.step()
        return loss

    @torch.no_grad()
    def prune(self, rate: float, finetune_lr: float) -> None:
        """Masks from the dense weights, then a fresh optimiser at the constant fine-tuning LR."""
        self.convs = install_masks(self.model, straight_through=False)
        scores = [importance(c.weight, self.imp) for c in self.convs]
        if self.exact_k:
            keep = keep_exact(scores, round((1.0 - rate) * sum(len(s) for s in scores)))
        else:
            keep = keep_above(scores, weight_threshold(scores, rate))
        for c, k in zip(self.convs, keep):
            c.mask.copy_(torch.from_numpy(k.reshape(tuple(c.mask.shape))).to(c.mask))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=finetune_lr, momentum=self.momentum,
                                         weight_decay=self.weight_decay, nesterov=self.nesterov)

    def finetune_iteration(self, x, y) -> torch.Tensor:
        return self._step(x, y)

    def masks(self) -> list[torch.Tensor]:
        return [c.mask.bool() for c in self.convs]

    def effective(self) -> list[torch.Tensor]:
        return [(c.weight * c.mask).detach() for c in self.convs]


def cubic_rate(rate: float, it: int, end: int) -> float:
    """main.py:245's target as a function (for boundary checks)."""
    return rate - rate * (1 - it / end) ** 3


__all__ = ["Masker", "MaskConv2d", "install_masks", "importance", "weight_threshold", "keep_above", "keep_exact",
           "InchonDPF", "OneShot", "Update", "cubic_rate"]
