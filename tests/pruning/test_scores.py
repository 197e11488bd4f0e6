"""harness/pruning/scores.py: LAMP's score on a hand-checked tensor and its properties (lamp.md 2.2)."""

from __future__ import annotations

import torch
from harness.pruning.scores import SCORES, lamp, magnitude


def test_lamp_hand_computed() -> None:
    # s = [9, 1, 4, 0]; ascending 0, 1, 4, 9; suffix sums 14, 14, 13, 9.
    out = lamp(torch.tensor([3.0, -1.0, 2.0, 0.0]))
    assert out.dtype == torch.float64
    assert torch.equal(out, torch.tensor([1.0, 1.0 / 14.0, 4.0 / 13.0, 0.0], dtype=torch.float64))
    # same values, 2-D layout: positions preserved
    out2 = lamp(torch.tensor([[0.0, 2.0], [-1.0, 3.0]]))
    assert torch.equal(out2, torch.tensor([[0.0, 4.0 / 13.0], [1.0 / 14.0, 1.0]], dtype=torch.float64))


def test_lamp_properties() -> None:
    torch.manual_seed(1)
    for shape in [(7,), (5, 9), (4, 3, 3, 3)]:
        w = torch.randn(shape)
        w[torch.rand(shape) < 0.3] = 0.0  # pruned entries
        s = lamp(w)
        assert s.shape == w.shape
        assert s.max().item() == 1.0
        assert s.reshape(-1)[w.abs().reshape(-1).argmax()].item() == 1.0
        assert torch.all(s[w == 0] == 0)
        order = torch.argsort(w.abs().reshape(-1), stable=True)
        assert torch.all(torch.diff(s.reshape(-1)[order]) >= 0)  # monotone in |w| within a layer
    assert torch.equal(lamp(torch.zeros(3, 2)), torch.zeros(3, 2, dtype=torch.float64))  # 0/0 -> 0
    assert lamp(torch.zeros(0)).numel() == 0
    # ties: lower index gets the larger score (consistent with keep_top's tie-break)
    assert torch.equal(lamp(torch.tensor([2.0, 2.0])), torch.tensor([1.0, 0.5], dtype=torch.float64))
    assert SCORES["lamp"].per_layer is lamp and SCORES["magnitude"].per_layer is magnitude
