"""Sparsity schedules: iterative geometric (lamp.md section 2.4) and gradual cubic (dpf.md section 1.3)."""

from __future__ import annotations

__all__ = ["geometric_density", "cubic_sparsity"]


def geometric_density(amount: float, round_k: int) -> float:
    """Remaining fraction after ``round_k`` rounds that each remove ``amount`` of the remaining
    weights: ``(1 - amount) ** k`` (lamp.md section 2.4; 0.8^k for the paper's 20 % per round)."""
    if round_k < 0:
        raise ValueError(f"round_k must be >= 0, got {round_k}")
    return (1.0 - amount) ** round_k


def cubic_sparsity(
    step: int,
    final_sparsity: float,
    start_step: int,
    end_step: int,
    initial_sparsity: float = 0.0,
) -> float:
    """Zhu & Gupta (2017) cubic schedule (dpf.md section 1.3):
    ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t_end - t0)) ** 3``,
    equal to ``s_i`` before ``t0`` and to ``s_f`` at and after ``t_end``."""
    if end_step < start_step:
        raise ValueError(f"end_step ({end_step}) must be >= start_step ({start_step})")
    if step < start_step:
        return initial_sparsity
    if step >= end_step:
        return final_sparsity
    progress = (step - start_step) / (end_step - start_step)
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** 3
