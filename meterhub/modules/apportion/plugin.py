"""The apportioning module as a plugin: module descriptor, console blueprint, menu entry."""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l

from meterhub import hookimpl

from . import models  # noqa: F401  (tables in the metadata)


@hookimpl
def register_modules() -> list[dict[str, Any]]:
    return [{"key": "apportion", "name": _l("Apportioning (公摊)"), "default_enabled": True,
             "description": _l("Share a parent meter's usage among accounts by ratio, area or usage")}]


@hookimpl
def register_blueprints() -> list:
    from .views import bp

    return [bp]


@hookimpl
def menu_items(operator: Any) -> list[dict[str, Any]]:
    return [{"label": _l("Apportioning"), "endpoint": "apportion.rules", "permission": "money.view", "order": 60,
             "section": "money"}]
