"""The plugin manager: loads plugins from the ``meterhub.plugins`` entry-point group.

    pm = get_plugin_manager()              # cached; built-ins load exactly like third-party plugins
    drivers = driver_registry(pm)          # {key: Driver}; StartupError on duplicate keys
    list_plugins(pm)                       # [{"name", "version", "hooks"}]

Environment: ``METERHUB_DISABLE_PLUGINS=a,b`` skips plugins by entry-point name;
``METERHUB_SAFE_MODE=1`` loads only plugins shipped in the ``meterhub`` distribution.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
from typing import Any

import pluggy

from meterhub import hookspecs
from meterhub.errors import MeterhubError

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "meterhub.plugins"
CORE_DISTRIBUTION = "meterhub"


class StartupError(MeterhubError):
    """The platform cannot start: a plugin failed to load or plugins clash."""


def _dist_name(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else ""


def load_plugins(pm: pluggy.PluginManager, group: str = ENTRY_POINT_GROUP) -> None:
    """Register every entry point of ``group`` on ``pm`` honouring disable/safe-mode settings."""
    disabled = {n.strip() for n in os.environ.get("METERHUB_DISABLE_PLUGINS", "").split(",") if n.strip()}
    safe_mode = os.environ.get("METERHUB_SAFE_MODE", "") not in ("", "0", "false", "no")
    seen: set[str] = set()
    for ep in sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name):
        if ep.name in seen:
            continue
        seen.add(ep.name)
        dist = _dist_name(ep)
        if ep.name in disabled:
            log.info("plugin %s disabled by METERHUB_DISABLE_PLUGINS", ep.name)
            continue
        if safe_mode and dist.lower() != CORE_DISTRIBUTION:
            log.info("plugin %s (%s) skipped in safe mode", ep.name, dist)
            continue
        try:
            module = ep.load()
        except Exception as err:
            raise StartupError(
                f"Plugin {ep.name!r} ({ep.value}, distribution {dist or '?'}) failed to import: "
                f"{err.__class__.__name__}: {err}. Fix or uninstall it, or start with "
                f"METERHUB_DISABLE_PLUGINS={ep.name}"
            ) from err
        try:
            pm.register(module, name=ep.name)
        except (ValueError, pluggy.PluginValidationError) as err:
            raise StartupError(f"Plugin {ep.name!r} cannot be registered: {err}") from err
        pm._meterhub_dists[ep.name] = dist  # type: ignore[attr-defined]


def new_plugin_manager() -> pluggy.PluginManager:
    """A fresh manager with all plugins loaded (uncached; for tests)."""
    pm = pluggy.PluginManager("meterhub")
    pm.add_hookspecs(hookspecs)
    pm._meterhub_dists = {}  # type: ignore[attr-defined]
    load_plugins(pm)
    return pm


@functools.cache
def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (cached; ``get_plugin_manager.cache_clear()`` resets it)."""
    return new_plugin_manager()


def driver_registry(pm: pluggy.PluginManager | None = None) -> dict[str, Any]:
    """All drivers by key; StartupError when two plugins register the same key."""
    pm = pm or get_plugin_manager()
    registry: dict[str, Any] = {}
    owner: dict[str, str] = {}
    for impl in reversed(pm.hook.register_drivers.get_hookimpls()):
        result = impl.function() or []
        for driver in result:
            key = driver.key
            if key in registry:
                raise StartupError(
                    f"Duplicate driver key {key!r} from plugins {owner[key]} and {impl.plugin_name}; "
                    "disable one of them (METERHUB_DISABLE_PLUGINS)"
                )
            registry[key], owner[key] = driver, impl.plugin_name
    return registry


def list_plugins(pm: pluggy.PluginManager | None = None) -> list[dict[str, Any]]:
    """Name, distribution version and implemented hooks of every registered plugin."""
    pm = pm or get_plugin_manager()
    dists: dict[str, str] = getattr(pm, "_meterhub_dists", {})
    rows = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: str(item[0])):
        if plugin is None:
            continue
        dist = dists.get(name, "")
        try:
            version = importlib.metadata.version(dist) if dist else ""
        except importlib.metadata.PackageNotFoundError:
            version = ""
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        rows.append({"name": name, "distribution": dist, "version": version, "hooks": hooks})
    return rows
