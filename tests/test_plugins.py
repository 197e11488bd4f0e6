"""harness/plugins.py (the extension API) and harness/config/plugins.py (finding and importing plugins): what a
plugin registers works like a built-in entry (typed parameters, validation, the runs), and every way a plugin can
break is one line naming it. The plugins are tests/plugins/*.py; ``plugin_sandbox`` undoes their registrations."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch
import yaml

from harness import plugins
from harness.config import ManifestError
from harness.config.load import load
from harness.config.plugins import installed, load_plugins
from harness.grid.execute import execute
from harness.grid.expand import expand
from harness.grid.options import Options
from harness.paths import Paths
from harness.pruning import scores
from harness.pruning.masks import MaskSet
from harness.pruning.schedules import SCHEDULES
from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("plugin_sandbox")

TINY = ROOT / "tests" / "manifests" / "tiny_load.yaml"


def _layer() -> MaskSet:
    return MaskSet({"w": torch.nn.Parameter(torch.tensor([[0.5, -2.0, 1.0], [0.1, 3.0, -0.2]]))})


def test_a_plugin_registers_a_score_an_allocation_a_schedule_and_a_method():
    load_plugins(["tests.plugins.good"])
    masks = _layer()
    stats = masks.prune_("square", "uniform_copy", 0.5)  # the plugin's score through the shared pipeline
    assert stats["pruned"] == 3 and masks.masks["w"].tolist() == [[False, True, True], [False, True, False]]
    assert plugins.origin("score", "square") == "tests" and plugins.origin("method", "square_global") == "tests"
    assert "linear" in SCHEDULES and SCHEDULES["linear"].factory(0.5, 0, 10, 1, 0.0, True).density(5) == 0.75


def test_a_plugin_method_runs_under_a_manifest_like_a_built_in_one(tmp_path, data_root):
    """A manifest lists the plugin and uses its method (and its schedule through typed, validated parameters)."""
    raw = yaml.safe_load(TINY.read_text())
    raw["plugins"] = ["tests.plugins.good"]
    raw["methods"] = {"sq": {"method": "square_global"},
                      "lin": {"procedure": "gradual", "score": "square", "allocation": "global",
                              "params": {"end": "2it", "update_every": 1, "schedule": "linear"}}}
    raw["experiments"][0]["methods"] = ["sq", "lin"]
    raw["experiments"][0]["sparsities"] = [0.5]
    path = tmp_path / "with_plugin.yaml"
    path.write_text(yaml.safe_dump(raw))
    m = load(path, "ci")
    specs = expand(m)
    assert {s.method: (s.procedure, s.score) for s in specs} == {"sq": ("iterative", "square"),
                                                               "lin": ("gradual", "square")}
    assert next(s for s in specs if s.method == "lin").params.schedule == "linear"
    out = execute(m, specs, Options(paths=Paths(tmp_path / "work"), data_root=data_root, executor="local"),
                  log=lambda *_: None)
    assert out.failed == [] and out.ran == len(specs)
    bad = dict(raw, methods={**raw["methods"], "lin": {**raw["methods"]["lin"], "params": {
        "end": "2it", "update_every": 1, "schedule": "sawtooth"}}})
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ManifestError, match=r"pruning\.gradual\.schedule: unknown schedule 'sawtooth' \(expected "
                                            r"one of: cubic, linear\)"):
        load(path, "ci")


@pytest.mark.parametrize("name, message", [
    ("tests.plugins.bad_needs", r"plugin 'tests\.plugins\.bad_needs' failed while registering: PluginError: plugin "
                                r"tests: score 'psychic' asks for \['future_gradients'\], which does not exist"),
    ("tests.plugins.clash", r"plugin 'tests\.plugins\.clash' failed while registering: PluginError: plugin tests: "
                            r"score 'lamp' is already registered \(built in\)"),
    ("tests.plugins.nowhere", r"no plugin 'tests\.plugins\.nowhere' \(installed plugins: taylor; or give an "
                              r"importable module path\)"),
])
def test_registration_mistakes_are_one_line(name, message):
    with pytest.raises(ManifestError, match=message) as e:
        load_plugins([name], "m.yaml: plugins")
    assert "\n" not in str(e.value) and str(e.value).startswith("m.yaml: plugins[0]: ")


def test_the_api_version_is_checked():
    plugins.require(plugins.API_VERSION)
    with pytest.raises(plugins.PluginError, match=r"needs prunebench plugin API 2; this harness has 1"):
        plugins.require(2)


def test_a_score_of_the_wrong_shape_or_that_raises_fails_in_one_line_naming_the_plugin():
    load_plugins(["tests.plugins.broken"])
    masks = _layer()
    with pytest.raises(plugins.PluginError, match=r"^plugin tests: score 'wrong_shape' returned \(3,\) for the layer "
                                                  r"of shape \(2, 3\)$"):
        masks.prune_("wrong_shape", "global", 0.5)
    inputs = masks.score_inputs(torch.nn.Linear(3, 2), batches=lambda: iter(()), loss=torch.nn.functional.mse_loss)
    with pytest.raises(plugins.PluginError, match=r"^plugin tests: score 'raises' raised ValueError: no batches "
                                                  r"for me$"):
        scores.compute("raises", inputs)
    with pytest.raises(plugins.PluginError, match=r"^plugin tests: allocation 'too_many' kept 4 entries of w, "
                                                  r"expected an integer in \[0, 3\]$"):
        MaskSet({"w": torch.nn.Parameter(torch.ones(3))}).prune_("magnitude", "too_many", 0.5)


def test_a_broken_plugin_fails_its_runs_and_the_grid_goes_on(tmp_path, data_root):
    raw = yaml.safe_load(TINY.read_text())
    raw["plugins"] = ["tests.plugins.broken"]
    raw["methods"] = {"broken": {"procedure": "iterative", "score": "wrong_shape", "allocation": "global"}}
    raw["experiments"][0]["methods"] = ["broken", "global"]
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(raw))
    m = load(path, "ci")
    specs = expand(m)
    out = execute(m, specs, Options(paths=Paths(tmp_path / "work"), data_root=data_root, executor="local"),
                  log=lambda *_: None)
    assert out.ran == len(specs) - len(out.failed) and len(out.failed) == sum(s.method == "broken" for s in specs)
    for name, error in out.failed:
        assert "/broken/" in name and "\n" not in error
        assert error.startswith("PluginError: plugin tests: score 'wrong_shape' returned (3,) for the layer")


def test_the_example_plugin_is_installed_as_an_entry_point():
    assert installed()["taylor"] == ("prunebench_taylor", "0.1.0")
    assert load_plugins(["taylor"]) == {"taylor": "0.1.0"}
    assert plugins.origin("score", "taylor") == "prunebench_taylor"
    spec = next(s for s in expand(load(ROOT / "examples" / "prunebench-taylor" / "overlays" / "lamp.yaml", "ci"))
                if s.method == "taylor")
    assert (spec.procedure, spec.score, spec.allocation) == ("iterative", "taylor", "global")
    assert dataclasses.asdict(spec.params)["prune_rate"] == 0.2
    assert importlib.import_module("prunebench_taylor").__version__ == "0.1.0"
