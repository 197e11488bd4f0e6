"""Run identities (OpenLTH style): the hash of a spec's canonical JSON *without defaults*.

A field whose value equals its schema default does not enter the hash, so adding a new field
with a default that keeps today's behaviour leaves every existing id (run folders, cached dense
models, MLflow runs) unchanged. A field renamed since is hashed under its old name (the class's
``RENAMED``, old -> new, which manifests and stored specs may still use), so a rename changes no id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def identity_dict(obj: Any) -> Any:
    """``obj`` as plain JSON data, every dataclass field at its default left out."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        old_name = {new: old for old, new in getattr(type(obj), "RENAMED", {}).items()}
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            default = _default(f)
            if default is not dataclasses.MISSING and value == default:
                continue
            out[old_name.get(f.name, f.name)] = identity_dict(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [identity_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): identity_dict(v) for k, v in obj.items()}
    return obj


def canonical_json(obj: Any) -> str:
    return json.dumps(identity_dict(obj), sort_keys=True, separators=(",", ":"))


def spec_hash(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:16]
