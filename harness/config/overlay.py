"""Overlay manifests: a short YAML that ``extends:`` a paper's manifest instead of copying it.

::

    extends: ../../paper_configs/lamp.yaml   # relative to the overlay file
    name: taylor                             # names its report folder (reports/<paper>/<profile>+<name>/);
                                             # default: the overlay file's stem
    plugins: [prunebench_taylor]             # added to the paper's
    methods:                                 # added to the paper's (a name of the paper's is an error)
      taylor: {procedure: iterative, score: taylor, allocation: global}
    add_methods:                             # appended to experiments' method lists, after the profile is applied
      all: [taylor]                          # or per experiment: {cifar10_main: [taylor]}
    set: {...}                               # deep-merged into the paper's manifest (as a profile's `set`)
    profiles: {...}                          # more profiles (a name of the paper's is an error)

The paper's key, experiments, models and settings stay those of the paper, so the paper's own cells keep their run
ids: run in the same work directory, an overlay trains only its new cells and reuses the shared dense models.
"""

from __future__ import annotations

from pathlib import Path

from harness.config.files import read_yaml
from harness.config.profiles import deep_merge
from harness.config.schema import ManifestError

__all__ = ["OVERLAY_KEYS", "apply_overlay", "add_methods"]

OVERLAY_KEYS = {"extends", "name", "plugins", "methods", "add_methods", "set", "profiles"}


def apply_overlay(raw: dict, text: str, path: Path) -> tuple[dict, str, str, dict]:
    """(the paper's raw manifest with the overlay applied, both texts for the digest, the overlay's name, its
    ``add_methods``)."""
    where = str(path)
    for k in raw:
        if k not in OVERLAY_KEYS:
            raise ManifestError(f"{where}: {k}: unknown key of an overlay (expected one of: "
                                f"{', '.join(sorted(OVERLAY_KEYS))})")
    base_path = raw["extends"]
    if not isinstance(base_path, str):
        raise ManifestError(f"{where}: extends: expected the path of a manifest, got {base_path!r}")
    target = (path.parent / base_path).resolve()
    if not target.is_file():
        raise ManifestError(f"{where}: extends: no manifest at {target}")
    base, base_text = read_yaml(target)
    if "extends" in base:
        raise ManifestError(f"{where}: extends: {target} is itself an overlay (extend the paper's manifest)")
    name = raw.get("name") or path.stem
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise ManifestError(f"{where}: name: expected a short name of letters, digits, - and _, got {name!r}")
    out = dict(base)
    if "set" in raw:
        if not isinstance(raw["set"], dict):
            raise ManifestError(f"{where}: set: expected a mapping of manifest keys to override")
        out = deep_merge(out, raw["set"])
    for key in ("methods", "profiles"):
        extra = raw.get(key) or {}
        if not isinstance(extra, dict):
            raise ManifestError(f"{where}: {key}: expected a mapping")
        mine = dict(out.get(key) or {})
        for k in extra:
            if k in mine:
                raise ManifestError(f"{where}: {key}.{k}: the paper's manifest already has '{k}'; use another name")
        out[key] = {**mine, **extra}
    plugins = raw.get("plugins") or []
    if not isinstance(plugins, list):
        raise ManifestError(f"{where}: plugins: expected a list of plugin names or module paths, got {plugins!r}")
    out["plugins"] = list(dict.fromkeys([*(out.get("plugins") or []), *plugins]))
    add = raw.get("add_methods") or {}
    if not isinstance(add, dict) or not all(isinstance(v, list) for v in add.values()):
        raise ManifestError(f"{where}: add_methods: expected a mapping of experiment name (or all) -> methods")
    return out, base_text + "\0" + text, name, add


def add_methods(raw: dict, add: dict, where: str, known: set[str]) -> dict:
    """The (profile-applied) raw manifest with the overlay's methods appended to the experiments it names (``known``:
    the paper's experiments; one that the profile leaves out is skipped)."""
    if not add:
        return raw
    for k in add:
        if k != "all" and k not in known:
            raise ManifestError(f"{where}: add_methods.{k}: no such experiment (expected all or one of: "
                                f"{', '.join(sorted(map(str, known)))})")
    out = []
    for e in raw.get("experiments") or []:
        if isinstance(e, dict):
            extra = [*add.get("all", []), *add.get(e.get("name"), [])]
            e = {**e, "methods": list(dict.fromkeys([*(e.get("methods") or []), *extra]))}
        out.append(e)
    return {**raw, "experiments": out}
