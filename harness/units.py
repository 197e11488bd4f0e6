"""Durations in a manifest: ``50000it`` (optimizer steps) or ``300ep`` (epochs)."""

from __future__ import annotations

import re

DURATION = re.compile(r"^([1-9][0-9]*|0)(it|ep)$")


def is_duration(value: str) -> bool:
    return isinstance(value, str) and DURATION.match(value) is not None


def duration_steps(duration: str, steps_per_epoch: int) -> int:
    """'50000it' -> 50000; '300ep' -> 300 * steps_per_epoch."""
    count, unit = DURATION.match(duration).groups()
    return int(count) * (steps_per_epoch if unit == "ep" else 1)


def steps_per_epoch(n_train: int, batch_size: int, drop_last: bool) -> int:
    return n_train // batch_size if drop_last else -(-n_train // batch_size)
