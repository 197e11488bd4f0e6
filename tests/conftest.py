"""Shared fixtures: the LAMP manifest, a shared offline data root, tiny run specs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from harness.config import RunSpec, expand, load

ROOT = Path(__file__).resolve().parent.parent
LAMP = ROOT / "paper_configs" / "lamp.yaml"


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """One data root per session (Fashion-MNIST is un-gzipped into it once)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def ci_manifest():
    return load(LAMP, profile="ci")


def shrink(spec: RunSpec, *, pretrain: str = "20it", retrain: str = "5it", rounds: int = 3,
           examples: int = 100, **pruning) -> RunSpec:
    """A ci spec made smaller still, for tests that run several experiments."""
    return dataclasses.replace(
        spec,
        training=dataclasses.replace(spec.training, pretrain=pretrain, retrain=retrain),
        eval=dataclasses.replace(spec.eval, train_examples=examples, test_examples=examples),
        params=dataclasses.replace(spec.params, rounds=rounds, **pruning),
    )


@pytest.fixture
def tiny_specs(ci_manifest) -> dict[tuple[str, int], RunSpec]:
    """(method, seed) -> a tiny spec of the ci grid."""
    return {(s.method, s.seed): shrink(s) for s in expand(ci_manifest)}


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
    yield


def pytest_collection_modifyitems(config, items):
    """Lab-scale tests (marker ``lab``: real Ray clusters, tracking servers, PostgreSQL, faults) run
    only when a ``-m`` expression names them (``make test-lab``), never as part of ``make test``."""
    if "lab" in (config.option.markexpr or ""):
        return
    lab = [i for i in items if i.get_closest_marker("lab") is not None]
    if lab:
        config.hook.pytest_deselected(items=lab)
        items[:] = [i for i in items if i.get_closest_marker("lab") is None]
