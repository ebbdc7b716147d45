"""The billing-items module as a plugin: descriptor, blueprint, menu entry, the daily charging job."""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l

from meterhub import hookimpl

from . import models  # noqa: F401  (tables in the metadata)


@hookimpl
def register_modules() -> list[dict[str, Any]]:
    return [{"key": "billing_items", "name": _l("Billing items (收费项)"), "default_enabled": True,
             "description": _l("Property fees, rent and service fees, deducted or billed")}]


@hookimpl
def register_blueprints() -> list:
    from .views import bp

    return [bp]


@hookimpl
def menu_items(operator: Any) -> list[dict[str, Any]]:
    return [{"label": _l("Billing items"), "endpoint": "billing_items.index", "permission": "money.view", "order": 62,
             "section": "money"}]


@hookimpl
def register_jobs() -> list[dict[str, Any]]:
    return [{"name": "billing_items.charge_due", "interval": 3600,
             "callable": "meterhub.modules.billing_items.service:charge_due_job"}]
