"""Record the size (parameters, forward MACs) of every model the manifests build, for `prunebench plan`.

    .venv/bin/python scripts/model_costs.py            # every (arch, width, classes, image size) of every profile

The sizes land in harness/models/costs.json; tests/models/test_catalog.py checks it covers every manifest and that
each entry equals the built model's.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.config.load import load_all  # noqa: E402
from harness.config.specs import image_size  # noqa: E402
from harness.grid.expand import expand  # noqa: E402
from harness.models.build import record_costs  # noqa: E402


def manifest_models() -> list[tuple[str, float, int, int]]:
    out = set()
    for path in sorted((ROOT / "paper_configs").glob("*.yaml")):
        for m in load_all(path):
            out |= {(s.model.arch, s.model.width, s.num_classes, image_size(s.dataset)) for s in expand(m)}
    return sorted(out)


if __name__ == "__main__":
    models = manifest_models()
    record_costs(models)
    print(f"recorded {len(models)} model sizes")
