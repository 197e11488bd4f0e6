"""Reading a manifest file: one-line errors for a missing file or invalid YAML."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.config.schema import ManifestError

__all__ = ["read_yaml"]


def read_yaml(path: str | Path) -> tuple[dict, str]:
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise ManifestError(f"{where}: manifest file not found")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        raise ManifestError(f"{where}: not valid YAML{line}: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: expected a mapping at the top level")
    return raw, text
