"""prunebench: a reproducibility benchmark harness for neural-network pruning papers."""

__version__ = "0.1.0"
