"""Feature modules: which exist (plugins' ``register_modules``) and which a group has enabled."""

from __future__ import annotations

from dataclasses import dataclass

from ..plugins import get_plugin_manager
from ..tenants.models import Group


@dataclass(frozen=True)
class ModuleInfo:
    key: str
    name: str
    description: str = ""
    default_enabled: bool = True


def available_modules() -> dict[str, ModuleInfo]:
    """Every feature module the installed plugins declare, by key."""
    modules: dict[str, ModuleInfo] = {}
    for batch in get_plugin_manager().hook.register_modules():
        for item in batch or []:
            info = ModuleInfo(item["key"], str(item["name"]), str(item.get("description", "")),
                              bool(item.get("default_enabled", True)))
            modules[info.key] = info
    return modules


def _defaults() -> dict[str, bool]:
    """Each installed module's key and whether it is on by default (names left untranslated: every request asks)."""
    return {item["key"]: bool(item.get("default_enabled", True))
            for batch in get_plugin_manager().hook.register_modules() for item in batch or []}


def module_enabled(group: Group, key: str, defaults: dict[str, bool] | None = None) -> bool:
    """Whether ``group`` uses module ``key`` (its own choice, else the module's default)."""
    choice = (group.modules or {}).get(key)
    if choice is not None:
        return bool(choice)
    return (_defaults() if defaults is None else defaults).get(key, False)


def disabled_modules(group: Group) -> set[str]:
    """Keys of the installed modules this group has switched off."""
    defaults = _defaults()
    return {key for key in defaults if not module_enabled(group, key, defaults)}
