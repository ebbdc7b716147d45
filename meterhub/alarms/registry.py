"""Notifier and SMS-provider registries built from the plugin hooks (duplicate keys stop startup)."""

from __future__ import annotations

from typing import Any

from ..plugins import StartupError, get_plugin_manager


def _collect(hook_name: str, what: str) -> dict[str, Any]:
    hook = getattr(get_plugin_manager().hook, hook_name, None)
    registry: dict[str, Any] = {}
    owner: dict[str, str] = {}
    if hook is None:
        return registry
    for impl in reversed(hook.get_hookimpls()):
        for item in impl.function() or []:
            if item.key in registry:
                raise StartupError(f"Duplicate {what} key {item.key!r} from plugins {owner[item.key]} and "
                                   f"{impl.plugin_name}; disable one of them (METERHUB_DISABLE_PLUGINS)")
            registry[item.key], owner[item.key] = item, impl.plugin_name
    return registry


def notifiers() -> dict[str, Any]:
    """Every notifier by key (email, webhook, sms, portal and those of plugins)."""
    return _collect("register_notifiers", "notifier")


def sms_providers() -> dict[str, Any]:
    """Every SMS-gateway provider by key."""
    return _collect("register_sms_providers", "SMS provider")
