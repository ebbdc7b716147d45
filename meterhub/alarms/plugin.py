"""The alarms feature as a plugin: notifiers, SMS provider, the polling job, notifications, the menu entry
of its console pages (webui.alarms, registered by the web layer)."""

from __future__ import annotations

import logging
from typing import Any

from flask import has_app_context
from flask_babel import lazy_gettext as _l

from ..hookspecs import hookimpl
from .notifiers import BUILTIN_NOTIFIERS, BUILTIN_SMS_PROVIDERS

log = logging.getLogger(__name__)


@hookimpl(trylast=True)
def register_notifiers() -> list[Any]:
    return list(BUILTIN_NOTIFIERS)


@hookimpl(trylast=True)
def register_sms_providers() -> list[Any]:
    return list(BUILTIN_SMS_PROVIDERS)


@hookimpl
def register_jobs() -> list[dict[str, Any]]:
    return [{"name": "alarms.poll", "interval": 60, "callable": "meterhub.alarms.sources:poll"}]


@hookimpl
def menu_items(operator: Any) -> list[dict[str, Any]]:
    return [{"label": _l("Alarms"), "endpoint": "alarms.index", "permission": "device.view", "order": 30,
             "section": "monitor"}]


@hookimpl
def alarm_raised(alarm: Any) -> None:
    """Queue the notifications of a new alarm (planned and sent by an rq job, :func:`dispatch.notify_raised`)."""
    if not has_app_context():
        log.warning("alarm %s raised outside an app context: no notifications queued", alarm.id)
        return
    from .. import soon
    from ..outbox import enqueue_job
    from .dispatch import NOTIFY_RAISED

    try:  # a burst of alarms (one commit raising 60) is one job that sends them side by side
        soon.request(NOTIFY_RAISED, items=[alarm.id], strict=True)
    except Exception as err:  # noqa: BLE001 - Redis unreachable: a job of its own, held in the outbox meanwhile
        log.info("alarm %s: notified through the job outbox (%s)", alarm.id, err)
        enqueue_job("default", "meterhub.alarms.dispatch:notify_alarm", {"alarm_id": alarm.id},
                    group_id=alarm.group_id, description=f"notify alarm {alarm.id}")
