"""Run ids are the runs' identity (folders, cached dense models, MLflow runs): a refactor, a renamed key or a new
setting at its default must not change one. tests/config/run_ids.json pins every run and dense id of every profile of
the four papers (written at commit fec6078); a cell added since may add ids, none may disappear.

Regenerate only for an intended change of setup, and say so in the commit: ``python tests/config/test_identity.py --write``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PINNED = Path(__file__).resolve().parent / "run_ids.json"


def current() -> dict[str, dict[str, list[str]]]:
    from harness.config.load import load
    from harness.grid.expand import expand
    from harness.pruning.methods import dense_spec

    out = {}
    for path in sorted((ROOT / "paper_configs").glob("*.yaml")):
        profiles = [None] + sorted((yaml.safe_load(path.read_text()).get("profiles") or {}))
        for profile in profiles:
            specs = expand(load(path, profile or "full"))
            out[f"{path.stem}:{profile or 'full'}"] = {
                "runs": sorted(s.id for s in specs),
                "dense": sorted({d.id for s in specs if (d := dense_spec(s)) is not None})}
    return out


@pytest.fixture(scope="module")
def now():
    return current()


PIN = json.loads(PINNED.read_text())


@pytest.mark.parametrize("key", sorted(PIN))
def test_no_pinned_id_changes(key, now):
    assert key in now, f"profile {key} is gone"
    for kind in ("runs", "dense"):
        lost = sorted(set(PIN[key][kind]) - set(now[key][kind]))
        assert lost == [], f"{key}: {len(lost)} pinned {kind} ids changed or vanished, e.g. {lost[:3]}"


def test_the_pin_covers_all_four_papers():
    assert {k.split(":")[0] for k in PIN} == {"lamp", "dpf", "ap", "pags"}
    assert sum(len(v["runs"]) for v in PIN.values()) > 1000


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    sys.path.insert(0, str(ROOT))
    PINNED.write_text(json.dumps(current(), indent=0, sort_keys=True) + "\n")
