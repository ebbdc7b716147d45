"""The prepaid module (plugin): accounts, charging, control loop, cashier counter.

Registered through the ``meterhub.plugins`` entry point ``prepaid = "meterhub.modules.prepaid"``.
"""

from __future__ import annotations

import logging

from ...hookspecs import hookimpl

log = logging.getLogger(__name__)


@hookimpl
def register_modules():
    from flask_babel import lazy_gettext as _l

    return [{"key": "prepaid", "name": _l("Prepaid electricity and water"),
             "description": _l("Accounts, top-ups, real-time charging, relay/valve control"), "default_enabled": True}]


@hookimpl
def register_blueprints():
    from . import views_alarm_levels, views_monitor  # noqa: F401  (their routes are on the prepaid blueprint)
    from .views import bp
    from .views_dashboard import bp as dashboard_bp

    return [bp, dashboard_bp]


@hookimpl
def menu_items(operator):
    from flask_babel import lazy_gettext as _l

    return [{"label": _l("Room monitor"), "endpoint": "prepaid.rooms", "permission": "money.view", "order": 20,
             "section": "monitor"},
            {"label": _l("Cashier counter"), "endpoint": "prepaid.counter", "permission": "money.view", "order": 21,
             "section": "money"}]


@hookimpl
def register_jobs():
    return [
        {"name": "prepaid.charge", "interval": 60, "callable": "meterhub.modules.prepaid.jobs:charge"},
        {"name": "commands.dispatch", "interval": 15, "callable": "meterhub.commands.worker:dispatch",
         "queue": "commands"},
        {"name": "ledger.verify", "interval": 3600, "callable": "meterhub.modules.prepaid.jobs:verify_ledger"},
        # days of money left of every open account; alarm levels in days (forecast_store)
        {"name": "prepaid.forecast", "interval": 600,
         "callable": "meterhub.modules.prepaid.forecast_store:refresh_job", "queue": "bulk"},
    ]


@hookimpl
def reading_stored(group_id, meter_ids):
    """Re-send the desired relay state to meters that report otherwise; check purchase counters; retry now the
    relay commands that waited for these meters; charge these readings soon (an event job)."""
    from ...db import service_session
    from . import promptly
    from .control import reconcile_relays
    from .metering import check_purchase_counters

    with service_session() as session:
        created = reconcile_relays(session, meter_ids)
        check_purchase_counters(session, group_id, meter_ids)
    with service_session() as session:
        promptly.retry_waiting(session, meter_ids)
    promptly.hand_over_meters(c.meter_id for c in created)
    promptly.request_charge(meter_ids)
