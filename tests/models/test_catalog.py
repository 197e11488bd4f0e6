"""The torch-free model catalog agrees with the builders: the same architecture and initialiser names, and every
size `prunebench plan` reads is the built model's, for every model of every manifest profile."""

from __future__ import annotations

import pytest

from harness.models import ARCHS, INITS, model_cost
from harness.models.build import MODELS, measured_cost
from harness.models.init import INITS as INIT_FUNCTIONS

from scripts.model_costs import manifest_models


def test_catalog_names_the_builders_and_initialisers():
    assert set(ARCHS) == set(MODELS)
    assert set(INITS) == set(INIT_FUNCTIONS)


@pytest.mark.parametrize("arch,width,classes,size", manifest_models())
def test_every_manifest_model_has_its_measured_size_recorded(arch, width, classes, size):
    assert model_cost(arch, width, classes, size) == measured_cost(arch, width, classes, size)


def test_an_unrecorded_size_is_none():
    assert model_cost("resnet20_cifar_optb", 0.3, 10) is None
