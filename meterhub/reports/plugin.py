"""The reports feature as a plugin: built-in report definitions, the scheduled-report job, the menu entry
of its console pages (webui.reports, registered by the web layer)."""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l

from ..hookspecs import hookimpl


@hookimpl(trylast=True)
def register_reports() -> list[Any]:
    from .registry import builtin_reports

    return builtin_reports()


@hookimpl
def register_jobs() -> list[dict[str, Any]]:
    return [{"name": "reports.scheduled", "interval": 900, "callable": "meterhub.reports.scheduled:run_due"},
            {"name": "reports.recover", "interval": 15, "callable": "meterhub.reports.exports:recover_exports"},
            {"name": "reports.prune", "interval": 3600, "callable": "meterhub.reports.exports:prune_exports"}]


@hookimpl
def menu_items(operator: Any) -> list[dict[str, Any]]:
    return [{"label": _l("Reports"), "endpoint": "reports.index", "permission": "report.view", "order": 40,
             "section": "reports"}]
