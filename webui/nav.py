"""The console's navigation, grouped by job: Monitor · Money · Devices · Reports · Settings.

The web layer's own pages are listed here; plugins add theirs with the ``menu_items`` hook (a dict with label,
endpoint, permission, order and ``section``, one of ``SECTIONS``' keys; none → settings). An entry shows only when
the operator has its permission — the item's, else the ``permission_required`` of its view — and its module is on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import current_app, url_for
from flask_babel import lazy_gettext as _l
from flask_babel import lazy_pgettext

from meterhub.tenants.scoping import has_permission

SECTIONS: list[tuple[str, Any, str]] = [
    ("monitor", lazy_pgettext("nav", "Monitor"), "bi-speedometer2"),
    ("money", lazy_pgettext("nav", "Money"), "bi-cash-coin"),
    ("devices", lazy_pgettext("nav", "Devices"), "bi-cpu"),
    ("reports", lazy_pgettext("nav", "Reports"), "bi-bar-chart-line"),
    ("settings", lazy_pgettext("nav", "Settings"), "bi-gear"),
]

# The web layer's own pages (plugins contribute the rest through ``menu_items``).
BUILTIN: list[dict[str, Any]] = [
    {"label": _l("Dashboard"), "endpoint": "console.dashboard", "section": "monitor", "order": 1},
    {"label": _l("Gateways and devices"), "endpoint": "devices.gateways", "section": "devices", "order": 10},
    {"label": _l("Onboarding"), "endpoint": "devices.onboard", "section": "devices", "order": 11},
    {"label": _l("Import devices"), "endpoint": "devices.import_devices", "section": "devices", "order": 12},
    {"label": _l("Properties and rooms"), "endpoint": "console.properties", "section": "settings", "order": 10},
    {"label": _l("Price plans"), "endpoint": "tariffs.index", "section": "settings", "order": 20,
     "visible": "can_view_tariffs"},
    {"label": _l("Operators"), "endpoint": "admin.operators", "section": "settings", "order": 30},
    {"label": _l("Payment channels"), "endpoint": "payment_channels.index", "section": "settings", "order": 50},
    {"label": _l("Notifiers"), "endpoint": "alarms.notifier_list", "section": "settings", "order": 60},
    {"label": _l("Group settings"), "endpoint": "settings.index", "section": "settings", "order": 80},
    {"label": _l("Audit log"), "endpoint": "audit.index", "section": "settings", "order": 95},
]

# The section of a blueprint's other pages (an account page is Money's, a room page Settings').
HOME_SECTIONS = {"prepaid": "money", "console": "settings", "alarms": "monitor"}


def _permission(item: dict[str, Any]) -> str | None:
    if item.get("permission"):
        return item["permission"]
    view = current_app.view_functions.get(item.get("endpoint", ""))
    return getattr(view, "permission", None)


def entries(operator: Any, plugin_items: list[dict[str, Any]], disabled: set[str],
            checks: dict[str, Callable[[], bool]]) -> list[dict[str, Any]]:
    """Every entry ``operator`` may open, each with label, url, section, order, endpoint."""
    shown = []
    for item in [*BUILTIN, *plugin_items]:
        endpoint = item.get("endpoint", "")
        if endpoint and (endpoint not in current_app.view_functions or endpoint.split(".")[0] in disabled):
            continue
        permission = _permission(item)
        if permission and not has_permission(operator, permission):
            continue
        if item.get("visible") and not checks.get(item["visible"], lambda: True)():
            continue
        section = item.get("section") if item.get("section") in dict((k, k) for k, _, _ in SECTIONS) else "settings"
        shown.append({"label": item["label"], "url": url_for(endpoint) if endpoint else item["url"],
                      "section": section, "order": item.get("order", 100), "endpoint": endpoint})
    return sorted(shown, key=lambda i: i["order"])


def grouped(items: list[dict[str, Any]], endpoint: str | None = None) -> list[dict[str, Any]]:
    """The sections that have entries, in job order: key, label, icon, items, active (the section of the page at
    ``endpoint``: the one listing it, else the first listing a page of its blueprint)."""
    sections = [{"key": key, "label": label, "icon": icon, "items": [i for i in items if i["section"] == key],
                 "active": False} for key, label, icon in SECTIONS if any(i["section"] == key for i in items)]
    endpoint = endpoint or ""
    exact = [s for s in sections if any(i["endpoint"] == endpoint for i in s["items"])]
    blueprint = endpoint.split(".")[0]
    near = [s for s in sections if s["key"] == HOME_SECTIONS.get(blueprint)]
    near += [s for s in sections if any(i["endpoint"].startswith(blueprint + ".") for i in s["items"])]
    if exact or near:
        (exact or near)[0]["active"] = True
    return sections
