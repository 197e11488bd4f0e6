"""Paper manifests as typed values, torch-free (``import harness.config`` never loads torch).

The package's own namespace holds the typed vocabulary only (schema, specs, identities: below the method registry,
which types its parameters with them); reading a manifest is :func:`harness.config.load.load` (it validates against
the registry, so it sits above it).

* :mod:`~harness.config.schema`: the dataclasses a manifest is made of;
* :mod:`~harness.config.profiles`: named overrides (``profiles.ci``) applied before validation;
* :mod:`~harness.config.build`: the strict typed build (one-line errors);
* :mod:`~harness.config.resolve`: one grid cell's settings, resolved and checked;
* :mod:`~harness.config.load`: YAML -> profile -> build -> semantic checks; specs read back from disk;
* :mod:`~harness.config.specs`: a cell and a dense pre-training as frozen values;
* :mod:`~harness.config.identity`: their ids, hashed without fields at their defaults.

The grid itself (the specs of a manifest) is :func:`harness.grid.expand.expand`.
"""

from harness.config.identity import canonical_json, identity_dict, spec_hash
from harness.config.schema import (Claim, DatasetConfig, Deviation, EvalConfig, ExpectedCells, Experiment, Layout,
                                   LRScheduleConfig, Manifest, ManifestError, MethodConfig, ModelConfig, NoiseRule,
                                   OptimizerConfig, PruningConfig, Resources, TrainingConfig)
from harness.config.specs import DenseSpec, RunSpec, image_size, train_size

__all__ = [
    "Claim", "DatasetConfig", "DenseSpec", "Deviation", "EvalConfig", "ExpectedCells", "Experiment", "Layout",
    "LRScheduleConfig", "Manifest", "ManifestError", "MethodConfig", "ModelConfig", "NoiseRule", "OptimizerConfig",
    "PruningConfig", "Resources", "RunSpec", "TrainingConfig", "canonical_json", "identity_dict", "image_size",
    "spec_hash", "train_size",
]
