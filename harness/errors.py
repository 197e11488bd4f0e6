"""Errors the CLI reports as one line (no traceback)."""


class ClusterError(RuntimeError):
    """The Ray cluster cannot be used (unreachable, or it refuses this driver's token)."""


class DataError(Exception):
    """A user-facing data problem (a dataset missing, a subset that does not fit); the message is one actionable
    line."""
