"""harness/config/overlay.py: a short YAML that extends a paper's manifest adds methods, settings and profiles
without copying it, and the paper's own cells keep their run ids."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.config import ManifestError
from harness.config.load import load, load_all
from harness.grid.expand import expand
from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("plugin_sandbox")

LAMP = ROOT / "paper_configs" / "lamp.yaml"


def _overlay(tmp_path, **body) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"extends": str(LAMP), **body}))
    return path


def test_an_overlay_adds_a_method_to_every_experiment_and_keeps_the_papers_ids(tmp_path):
    path = _overlay(tmp_path, methods={"lamp_half": {"method": "lamp", "params": {"prune_rate": 0.5}}},
                    add_methods={"all": ["lamp_half"]})
    for profile in ("ci", "full"):
        paper, mine = expand(load(LAMP, profile)), expand(load(path, profile))
        assert {s.id for s in paper} < {s.id for s in mine}
        new = [s for s in mine if s.id not in {p.id for p in paper}]
        assert new and {s.method for s in new} == {"lamp_half"} and {s.params.prune_rate for s in new} == {0.5}
        assert {s.experiment for s in new} == {e.name for e in load(LAMP, profile).experiments}
    m = load(path, "ci")
    assert (m.paper.key, m.overlay, m.label, m.profile) == ("lamp", "mine", "ci+mine", "ci")
    assert [x.profile for x in load_all(path)] == ["full", "code", "ci", "claims"]


def test_methods_for_named_experiments_only_and_a_profile_without_them(tmp_path):
    path = _overlay(tmp_path, name="rewind_only", methods={"lamp_half": {"method": "lamp", "params": {"prune_rate": 0.5}}},
                    add_methods={"cifar10_rewind": ["lamp_half"]},
                    profiles={"mine": {"experiments": ["cifar10_rewind"], "grid": {"seeds": [0]}}})
    full = expand(load(path))
    paper = expand(load(LAMP))
    assert len(full) - len(paper) == len({(s.model_key, s.seed) for s in paper if s.experiment == "cifar10_rewind"})
    ci = expand(load(path, "ci"))  # the ci profile keeps only cifar10_main: nothing to add, nothing changes
    assert [s.id for s in ci] == [s.id for s in expand(load(LAMP, "ci"))]
    assert {s.experiment for s in expand(load(path, "mine"))} == {"cifar10_rewind"}
    assert load(path, "mine").label == "mine+rewind_only"


def test_a_setting_changed_by_set_moves_only_the_cells_it_changes(tmp_path):
    path = _overlay(tmp_path, set={"experiments": yaml.safe_load(LAMP.read_text())["experiments"][:1]})
    assert {s.experiment for s in expand(load(path))} == {"cifar10_main"}
    assert {s.id for s in expand(load(path))} <= {s.id for s in expand(load(LAMP))}


@pytest.mark.parametrize("body, message", [
    ({"experiments": []}, r"mine\.yaml: experiments: unknown key of an overlay \(expected one of: add_methods, "
                          r"extends, methods, name, plugins, profiles, set\)"),
    ({"extends": "nowhere.yaml"}, r"mine\.yaml: extends: no manifest at .*nowhere\.yaml"),
    ({"methods": {"lamp_plus": {"method": "lamp"}}, "add_methods": {"cifar10_main": ["lamp_plus"],
                                                                    "cifar11": ["lamp_plus"]}},
     r"add_methods\.cifar11: no such experiment \(expected all or one of: cifar100_vgg16, cifar10_conv6, cifar10_main, "),
    ({"profiles": {"ci": {}}}, r"mine\.yaml: profiles\.ci: the paper's manifest already has 'ci'; use another name"),
    ({"add_methods": {"all": ["nonesuch"]}}, r"experiments\[0\]\.methods\[5\]: unknown method 'nonesuch'"),
    ({"methods": {"x": {"procedure": "iterative", "score": "nonesuch", "allocation": "global"}}},
     r"methods\.x\.score: unknown score 'nonesuch' \(expected one of: filter_l2, grasp, lamp, magnitude, random, "),
    ({"methods": {"x": {"method": "lamp", "score": "magnitude"}}}, r"methods\.x: give either method"),
    ({"name": "a b"}, r"mine\.yaml: name: expected a short name"),
])
def test_overlay_mistakes_are_one_line(tmp_path, body, message):
    path = _overlay(tmp_path, **body)
    with pytest.raises(ManifestError, match=message) as e:
        load(path, "full")
    assert "\n" not in str(e.value)


def test_an_overlay_of_an_overlay_is_refused(tmp_path):
    first = _overlay(tmp_path)
    second = tmp_path / "second.yaml"
    second.write_text(yaml.safe_dump({"extends": first.name}))
    with pytest.raises(ManifestError, match=r"second\.yaml: extends: .*mine\.yaml is itself an overlay"):
        load(second)
