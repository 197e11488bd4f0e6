"""Finding and importing plugins (torch-free here: a plugin imports what it needs when it is imported).

A manifest lists the plugins it uses (``plugins: [prunebench_taylor]``); each entry is the name of an installed
plugin (an entry point of the group ``prunebench.plugins`` in its package's metadata) or an importable module path.
Importing it runs its registrations (:mod:`harness.plugins`). Every failure is one line naming the plugin.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md

from harness.config.schema import ManifestError

__all__ = ["GROUP", "installed", "load_plugins", "describe"]

GROUP = "prunebench.plugins"
_LOADED: dict[str, str] = {}  # plugin name -> version, per process


def installed() -> dict[str, tuple[str, str]]:
    """Installed plugins: entry-point name -> (module, distribution version)."""
    out = {}
    for ep in md.entry_points(group=GROUP):
        version = ep.dist.version if ep.dist is not None else "?"
        out[ep.name] = (ep.value, version)
    return out


def _version(module_name: str) -> str:
    """The version of the distribution that installed the module's top-level package ("local": none did)."""
    dists = md.packages_distributions().get(module_name.split(".")[0]) or []
    try:
        return md.version(dists[0]) if dists else "local"
    except md.PackageNotFoundError:
        return "local"


def load_plugins(names: tuple[str, ...] | list[str], where: str = "plugins") -> dict[str, str]:
    """Import every plugin of ``names`` once per process; returns name -> version. A plugin that cannot be found or
    raises while registering is a one-line :class:`ManifestError` naming it."""
    eps = {ep.name: ep for ep in md.entry_points(group=GROUP)}
    out = {}
    for i, name in enumerate(names):
        if name in _LOADED:
            out[name] = _LOADED[name]
            continue
        key = f"{where}[{i}]"
        try:
            if name in eps:
                version = eps[name].dist.version if eps[name].dist is not None else "?"
                eps[name].load()
            else:
                importlib.import_module(name)
                version = _version(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                known = ", ".join(sorted(eps)) or "none installed"
                raise ManifestError(f"{key}: no plugin '{name}' (installed plugins: {known}; or give an importable "
                                    f"module path)") from None
            raise ManifestError(f"{key}: plugin '{name}' failed to import: {type(e).__name__}: {e}") from None
        except ManifestError as e:
            raise ManifestError(f"{key}: plugin '{name}': {e}") from None
        except Exception as e:  # noqa: BLE001 (a plugin's own error, reported in one line)
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ManifestError(f"{key}: plugin '{name}' failed while registering: {type(e).__name__}: {first}") from None
        _LOADED[name] = version or "?"
        out[name] = _LOADED[name]
    return out


def describe(names: tuple[str, ...] | list[str]) -> str:
    """``name==version, ...`` of loaded plugins (what a run's MLflow tag records)."""
    return ", ".join(f"{n}=={_LOADED.get(n, '?')}" for n in names)
