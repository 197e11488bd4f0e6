"""What a driver is asked (:class:`Options`) and what it reports back (:class:`Outcome`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.stage import Context
from harness.paths import Paths


@dataclass
class Options:
    paths: Paths
    data_root: Path | None = None
    download: bool = False
    executor: str = "ray"  # "ray" | "local"
    ray_address: str | None = None
    tracking_uri: str | None = None
    device: str | None = None
    plugins: tuple[str, ...] = ()  # the manifest's plugins: every worker imports them before running a job


@dataclass
class Outcome:
    total: int
    skipped: int = 0
    ran: int = 0
    dense_trained: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (run name, error)
    diverged: list[tuple[str, int]] = field(default_factory=list)  # (run name, step)
    unfinished: list[str] = field(default_factory=list)  # interrupted (Ctrl-C) before finishing
    held: list[tuple[str, str]] = field(default_factory=list)  # (run name, holder): another driver's


def context(opts: Options, report=lambda row: None) -> Context:
    """The run context of a job executed with ``opts`` (rows leave through ``report``)."""
    return Context(paths=opts.paths, data_root=opts.data_root, download=opts.download, device=opts.device,
                   report=report)
