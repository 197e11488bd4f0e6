"""Paper manifests as typed values, read in pipeline order.

* :mod:`~harness.config.schema`: the dataclasses a manifest is made of;
* :mod:`~harness.config.profiles`: named overrides (``profiles.ci``) applied before validation;
* :mod:`~harness.config.load`: YAML -> strict typed build -> semantic checks (one-line errors);
* :mod:`~harness.config.expand`: the grid -> one :class:`RunSpec` per cell (and its dense model);
* :mod:`~harness.config.identity`: run ids, hashed without fields at their defaults.
"""

from harness.config.expand import DenseSpec, RunSpec, dense_from_dict, expand, resources_for, train_size
from harness.config.identity import canonical_json, identity_dict, spec_hash
from harness.config.load import build, load, load_all
from harness.config.schema import (Claim, DatasetConfig, Deviation, EvalConfig, ExpectedCells, Experiment, Layout,
                                   LRScheduleConfig, Manifest, ManifestError, MethodConfig, ModelConfig, NoiseRule,
                                   OptimizerConfig, PruningConfig, Resources, TrainingConfig)

__all__ = [
    "Claim", "DatasetConfig", "DenseSpec", "Deviation", "EvalConfig", "ExpectedCells", "Experiment", "Layout",
    "LRScheduleConfig", "Manifest", "ManifestError", "MethodConfig", "ModelConfig", "NoiseRule", "OptimizerConfig",
    "PruningConfig", "Resources", "RunSpec", "TrainingConfig", "build", "canonical_json", "dense_from_dict",
    "expand", "identity_dict", "load", "load_all", "resources_for", "spec_hash", "train_size",
]
