"""Shared fixtures: the LAMP manifest, a shared offline data root, tiny run specs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from harness.config import RunSpec
from harness.config.load import load
from harness.grid.expand import expand

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


@pytest.fixture
def fake_procedure(monkeypatch):
    """The report tests' fake procedure (tests/report/fakes.py), registered for the test only."""
    from harness.pruning.methods import PROCEDURES
    from tests.report.fakes import FakeProcedure

    monkeypatch.setitem(PROCEDURES, FakeProcedure.name, FakeProcedure())


@pytest.fixture
def one_thread():
    """One intra-op thread (on two shared cores, two OpenMP threads make tiny convolutions many times slower; every
    comparison of a test stays within one setting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def ap_tiny(spec, **params):
    """An AP ci spec, smaller still: 32 train images (2 steps per epoch at batch 16), a 1-epoch cycle 0, 2-epoch
    trainings, 2 cycles."""
    ds = dataclasses.replace(spec.dataset, train_subset=32, test_subset=32)
    return dataclasses.replace(
        spec, dataset=ds,
        training=dataclasses.replace(spec.training, batch_size=16, pretrain="1ep", retrain="2ep"),
        eval=dataclasses.replace(spec.eval, batch_size=32, train_examples=32, test_examples=32),
        params=dataclasses.replace(spec.params, cycles=2, **params))


@pytest.fixture(scope="session")
def ap_specs():
    """method -> the tiny AP ci spec of seed 0."""
    return {s.method: ap_tiny(s) for s in expand(load(ROOT / "paper_configs" / "ap.yaml", "ci")) if s.seed == 0}


@pytest.fixture(scope="session")
def dpf_ci():
    return load(ROOT / "paper_configs" / "dpf.yaml", "ci")


@pytest.fixture
def plugin_sandbox():
    """Registries, loaded plugins and their modules as they were before the test (a plugin registers into
    process-wide registries; a test that loads one leaves nothing behind)."""
    import sys

    from harness import plugins
    from harness.config import plugins as loader
    from harness.pruning import allocation, catalog, schedules, scores
    from harness.pruning import methods

    dicts = [catalog.SCORES, catalog.ALLOCATIONS, scores.SCORES, allocation.ALLOCATIONS, schedules.SCHEDULES,
             methods.PROCEDURES, methods.METHODS, plugins._ORIGIN, loader._LOADED]
    saved = [dict(d) for d in dicts]
    modules = set(sys.modules)
    yield
    for d, before in zip(dicts, saved):
        d.clear()
        d.update(before)
    for name in set(sys.modules) - modules:  # the plugins' own modules, so that loading one registers again
        if name.startswith(("tests.plugins.", "prunebench_taylor")):
            del sys.modules[name]


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
