"""Advisory locks that let several drivers share one work directory.

Both are ``fcntl.flock`` locks on small files: the kernel drops them when their process ends,
however it ends (kill -9 included), so a dead driver never leaves a lock behind.

- :func:`exclusive` serialises short critical sections across processes (creating or migrating the
  SQLite MLflow store, creating a paper's experiment or a grouping run).
- :class:`Claim` is held by a driver for as long as it works on one run (or dense pre-training):
  a second driver of the same manifest skips the runs another one holds, and says who holds them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

CLAIM_FILE = ".claim"  # in a run's (or dense model's) folder


@contextlib.contextmanager
def exclusive(path: Path):
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block; waits for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def holder_text(info: dict | None) -> str:
    if not info:
        return "another prunebench driver"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    return f"pid {info.get('pid')} on {info.get('host')} (since {since})"


class Claim:
    """A driver's claim on one run folder: an exclusive, non-blocking flock on ``<dir>/.claim``
    whose file names the holder (pid, host, start time) for whoever finds it taken."""

    def __init__(self, directory: Path):
        self.path = directory / CLAIM_FILE
        self.fd: int | None = None

    def acquire(self, wait: bool = False) -> bool:
        """True when this process now holds the claim; False when another process does (``wait``:
        block until it is released instead)."""
        if self.fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode(), 0)
        self.fd = fd
        return True

    def holder(self) -> dict | None:
        """Who holds it (as the holder wrote it), or None when unknown."""
        try:
            return json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Claims:
    """The claims one driver holds; all released by :meth:`release_all` (or when it dies)."""

    def __init__(self):
        self.held: dict[str, Claim] = {}

    def take(self, key: str, directory: Path, wait: bool = False) -> Claim | None:
        """The claim on ``directory`` if this driver got it; None if another driver holds it."""
        if key in self.held:
            return self.held[key]
        c = Claim(directory)
        if c.acquire(wait=wait):
            self.held[key] = c
            return c
        return None

    def release(self, key: str) -> None:
        c = self.held.pop(key, None)
        if c is not None:
            c.release()

    def release_all(self) -> None:
        for key in list(self.held):
            self.release(key)
