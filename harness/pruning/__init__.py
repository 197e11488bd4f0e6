"""Pruning: masks, scores (weight-only and data-dependent), allocations, schedules, procedures."""

from harness.pruning import saliency  # noqa: F401  (registers the data-dependent scores)
