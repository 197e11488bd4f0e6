"""A grid cell and a dense pre-training as frozen values (pure data, torch-free): a spec's hash, with every field at
its default left out, is its identity (:mod:`harness.config.identity`). Which procedure runs a spec, and which dense
model it starts from, is the procedure registry's answer (:func:`harness.pruning.methods.procedure`,
:func:`harness.pruning.methods.dense_spec`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from harness.config.identity import spec_hash
from harness.config.schema import DatasetConfig, EvalConfig, LRScheduleConfig, ModelConfig, OptimizerConfig, TrainingConfig
from harness.data.sources import SOURCES

__all__ = ["DenseSpec", "RunSpec", "image_size", "train_size"]


@dataclass(frozen=True)
class DenseSpec:
    """Everything that determines a dense pre-trained model: its cache key (no evaluation settings)."""

    model: ModelConfig
    num_classes: int
    dataset: DatasetConfig
    optimizer: OptimizerConfig
    lr_schedule: LRScheduleConfig
    batch_size: int
    drop_last: bool
    steps: str
    precision: str
    seed: int
    snapshot_step: int | None = None  # a rewind point other than the initialisation
    channels_last: bool = False  # the fast-path switches it was trained under (TrainingConfig's)
    compile: bool = False

    @property
    def id(self) -> str:
        return spec_hash(self)


@dataclass(frozen=True)
class RunSpec:
    """One grid cell, fully resolved. Frozen; its hash (defaults left out) is the run id."""

    paper: str
    experiment: str
    method: str
    procedure: str
    score: str
    allocation: str
    model_key: str
    model: ModelConfig
    dataset_key: str
    dataset: DatasetConfig
    num_classes: int
    training: TrainingConfig
    eval: EvalConfig
    prunable: str
    params: Any  # the procedure's typed parameters (a frozen dataclass)
    seed: int
    target_sparsity: float | None = None

    @property
    def sparsity(self) -> float:
        """The target sparsity (fraction of the prunable set removed); 0 for procedures without a target."""
        return self.target_sparsity or 0.0

    @property
    def target_density(self) -> float:
        """The target density (fraction of the prunable set kept): ``1 - sparsity``."""
        return 1.0 - self.sparsity

    @property
    def id(self) -> str:
        return spec_hash(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def train_size(ds: DatasetConfig) -> int:
    full = SOURCES[ds.source].train_size
    return (min(full, ds.train_subset) if ds.train_subset else full) - ds.validation


def image_size(ds: DatasetConfig) -> int:
    """The side of the images the model sees: the dataset's ``image_size``, else the source's."""
    return ds.image_size or SOURCES[ds.source].image_size
