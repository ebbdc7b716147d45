"""The batch-operations module as a plugin: descriptor, blueprint, menu entry, the batch tick job."""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l

from meterhub import hookimpl

from . import models  # noqa: F401  (tables in the metadata)


@hookimpl
def register_modules() -> list[dict[str, Any]]:
    return [{"key": "batch", "name": _l("Batch operations (批量操作)"), "default_enabled": True,
             "description": _l("One action over many meters, now or scheduled, with per-meter results")}]


@hookimpl
def register_blueprints() -> list:
    from .views import bp

    return [bp]


@hookimpl
def menu_items(operator: Any) -> list[dict[str, Any]]:
    return [{"label": _l("Batch operations"), "endpoint": "batch.index", "permission": "batch.run", "order": 64,
             "section": "devices"}]


@hookimpl
def register_jobs() -> list[dict[str, Any]]:
    return [{"name": "batch.tick", "interval": 30, "callable": "meterhub.modules.batch.service:tick_job"}]
