"""Profiles: named overrides of a manifest (``profiles.<name>``), applied before validation."""

from __future__ import annotations

from typing import Any

from harness.config.schema import ManifestError

PROFILE_KEYS = {"description", "experiments", "set", "grid", "grids", "overrides", "titles", "deviations"}
GRID_AXES = {"methods", "models", "datasets", "seeds", "sparsities", "model_sparsities"}


def deep_merge(base: Any, over: Any) -> Any:
    """``over`` merged into ``base``: mappings key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: deep_merge(base[k], v) if k in base else v for k, v in over.items()}}
    return over


def profile_names(raw: dict) -> list[str]:
    profiles = raw.get("profiles") or {}
    return list(profiles) if isinstance(profiles, dict) else []


def apply_profile(raw: dict, profile: str, where: str) -> dict:
    """The raw manifest with profile ``profile`` applied (``full`` is the manifest as written)."""
    profiles = raw.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise ManifestError(f"{where}: profiles: expected a mapping of profile name -> overrides")
    if profile == "full":
        return raw
    if profile not in profiles:
        known = ", ".join(["full", *profiles]) or "full"
        raise ManifestError(f"{where}: profiles: no profile '{profile}' (expected one of: {known})")
    prof = profiles[profile] or {}
    key = f"profiles.{profile}"
    if not isinstance(prof, dict):
        raise ManifestError(f"{where}: {key}: expected a mapping")
    for k in prof:
        if k not in PROFILE_KEYS:
            raise ManifestError(f"{where}: {key}.{k}: unknown key (expected one of: {', '.join(sorted(PROFILE_KEYS))})")
    overrides = prof.get("set") or {}
    if not isinstance(overrides, dict):
        raise ManifestError(f"{where}: {key}.set: expected a mapping of manifest keys to override")
    out = deep_merge(raw, overrides)
    exps = out.get("experiments") or []
    if "experiments" in prof:
        wanted = prof["experiments"]
        if not isinstance(wanted, list):
            raise ManifestError(f"{where}: {key}.experiments: expected a list of experiment names")
        names = [e.get("name") for e in exps if isinstance(e, dict)]
        for n in wanted:
            if n not in names:
                raise ManifestError(f"{where}: {key}.experiments: no experiment '{n}' (expected one of: {', '.join(map(str, names))})")
        exps = [e for e in exps if isinstance(e, dict) and e.get("name") in wanted]
    grid = prof.get("grid") or {}
    if not isinstance(grid, dict):
        raise ManifestError(f"{where}: {key}.grid: expected a mapping of grid axes")
    for axis in grid:
        if axis not in GRID_AXES:
            raise ManifestError(f"{where}: {key}.grid.{axis}: unknown axis (expected one of: {', '.join(sorted(GRID_AXES))})")
    grids = prof.get("grids") or {}  # per experiment, over `grid`
    if not isinstance(grids, dict) or not all(isinstance(g, dict) for g in grids.values()):
        raise ManifestError(f"{where}: {key}.grids: expected a mapping of experiment name -> grid axes")
    names_here = [e.get("name") for e in exps if isinstance(e, dict)]
    for name, g in grids.items():
        if name not in names_here:
            raise ManifestError(f"{where}: {key}.grids.{name}: no such experiment in this profile")
        for axis in g:
            if axis not in GRID_AXES:
                raise ManifestError(f"{where}: {key}.grids.{name}.{axis}: unknown axis (expected one of: "
                                    f"{', '.join(sorted(GRID_AXES))})")
    exp_over = prof.get("overrides") or {}  # per experiment: deep-merged into its `overrides`
    if not isinstance(exp_over, dict) or not all(isinstance(o, dict) for o in exp_over.values()):
        raise ManifestError(f"{where}: {key}.overrides: expected a mapping of experiment name -> overrides")
    for name in exp_over:
        if name not in names_here:
            raise ManifestError(f"{where}: {key}.overrides.{name}: no such experiment in this profile")
    exps = [{**e, "overrides": deep_merge(e.get("overrides") or {}, exp_over[e["name"]])}
            if isinstance(e, dict) and e.get("name") in exp_over else e for e in exps]
    titles = prof.get("titles") or {}
    if not isinstance(titles, dict):
        raise ManifestError(f"{where}: {key}.titles: expected a mapping of experiment name -> title")
    for name in titles:
        if name not in [e.get("name") for e in exps if isinstance(e, dict)]:
            raise ManifestError(f"{where}: {key}.titles.{name}: no such experiment in this profile")
    out["experiments"] = [{**e, **grid, **grids.get(e.get("name"), {}),
                           **({"title": titles[e["name"]]} if e.get("name") in titles else {})}
                          if isinstance(e, dict) else e for e in exps]
    devs = prof.get("deviations") or []
    if not isinstance(devs, list):
        raise ManifestError(f"{where}: {key}.deviations: expected a list of {{name, reason}}")
    out["deviations"] = list(out.get("deviations") or []) + list(devs)
    return out
