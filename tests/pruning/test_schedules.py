"""harness/pruning/schedules.py: the sparsity schedules (lamp.md 2.4, dpf.md 1.3)."""

from __future__ import annotations

import pytest
from harness.pruning.schedules import Geometric, cubic_sparsity


def test_schedules() -> None:
    assert Geometric(0.2, 3).density(0) == 1.0
    with pytest.raises(ValueError):
        Geometric(0.2, 3).density(4)
    assert Geometric(0.2, 3).density(3) == pytest.approx(0.512)
    assert cubic_sparsity(-5, 0.9, 0, 100) == 0.0
    assert cubic_sparsity(0, 0.9, 0, 100) == 0.0
    assert cubic_sparsity(50, 0.9, 0, 100) == pytest.approx(0.9 * (1 - 0.5**3))  # 0.7875
    assert cubic_sparsity(100, 0.9, 0, 100) == 0.9
    assert cubic_sparsity(10**6, 0.9, 0, 100) == 0.9
    assert cubic_sparsity(5, 0.9, 10, 30, initial_sparsity=0.5) == 0.5
    assert cubic_sparsity(20, 0.9, 10, 30, initial_sparsity=0.5) == pytest.approx(0.9 - 0.4 / 8)
    values = [cubic_sparsity(t, 0.9, 0, 100) for t in range(101)]
    assert all(b >= a for a, b in zip(values, values[1:]))
