"""Errors the CLI reports as one line (no traceback)."""


class ClusterError(RuntimeError):
    """The Ray cluster cannot be used (unreachable, or it refuses this driver's token)."""
