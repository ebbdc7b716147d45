"""The post-paid module as a plugin: descriptor, blueprint, menu entry, the overdue/reminder job."""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l

from meterhub import hookimpl

from . import models  # noqa: F401  (tables in the metadata)


@hookimpl
def register_modules() -> list[dict[str, Any]]:
    return [{"key": "postpaid", "name": _l("Post-paid bills (后付费)"), "default_enabled": True,
             "description": _l("Bills per period for post-paid accounts, payments, reminders, PDF")}]


@hookimpl
def register_blueprints() -> list:
    from .views import bp

    return [bp]


@hookimpl
def menu_items(operator: Any) -> list[dict[str, Any]]:
    return [{"label": _l("Bills"), "endpoint": "postpaid.bills", "permission": "money.view", "order": 66,
             "section": "money"}]


@hookimpl
def register_jobs() -> list[dict[str, Any]]:
    return [{"name": "postpaid.overdue", "interval": 3600, "callable": "meterhub.modules.postpaid.service:overdue_job"},
            {"name": "postpaid.monthly_runs", "interval": 3600,
             "callable": "meterhub.modules.postpaid.runs:scheduled_runs_job"}]
