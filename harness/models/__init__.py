"""Models: the catalog of names and sizes (torch-free, :mod:`.catalog`), the builders (:mod:`.build`), the named
initialisers (:mod:`.init`), one module per family."""

from harness.models.catalog import ARCHS, INITS, model_cost

__all__ = ["ARCHS", "INITS", "model_cost"]
