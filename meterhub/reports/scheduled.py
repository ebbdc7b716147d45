"""Scheduled reports: chosen reports emailed as xlsx every day (yesterday) or month (last month).

:func:`run_due` is a periodic job (``register_jobs``). Mail goes through the group's first enabled email
notifier configuration (its SMTP server and encrypted password); without one the schedule records an error.
"""

from __future__ import annotations

import io
import logging
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from flask import current_app
from flask_babel import force_locale
from sqlalchemy import select

from ..alarms import secrets as secret_store
from ..alarms.models import NotifierConfig
from ..alarms.notifiers import EmailNotifier, Message
from ..db import service_session
from ..models import utcnow
from ..tenants.models import Group
from .filters import ReportFilter
from .models import ScheduledReport
from .registry import get_report
from .xlsx import write_xlsx

log = logging.getLogger(__name__)


def period_due(schedule: ScheduledReport, local_now: datetime) -> tuple[date, date] | None:
    """The period to send now ([start, end) dates), or None when nothing is due."""
    if local_now.hour < schedule.hour:
        return None
    today = local_now.date()
    if schedule.frequency == "daily":
        start, end = today - timedelta(days=1), today
    else:
        end = today.replace(day=1)
        start = (end - timedelta(days=1)).replace(day=1)
    if schedule.last_period is not None and schedule.last_period >= start:
        return None
    return start, end


def build_xlsx(schedule: ScheduledReport, start: date, end: date, timezone: str) -> tuple[bytes, int]:
    """The report of one period as xlsx bytes and its row count (run as the service role, group-scoped)."""
    definition = get_report(schedule.report)
    if definition is None:
        raise LookupError(f"report {schedule.report!r} is not installed")
    params = dict(schedule.params or {})
    report_filter = ReportFilter(schedule.group_id, start, end, params.get("property_ids"), params.get("property_id"),
                                 params.get("building_id"), params.get("room_id"), params.get("meter_id"),
                                 params.get("utility"), params.get("level", "meter"),
                                 params.get("granularity", "day"), timezone)
    definition.check(report_filter)
    buffer = io.BytesIO()
    with force_locale(params.get("locale") or current_app.config.get("BABEL_DEFAULT_LOCALE", "zh_CN")), \
            service_session() as session:
        count = write_xlsx(buffer, str(definition.name), definition.header(), definition.rows(session, report_filter),
                           [c.kind for c in definition.columns])
    return buffer.getvalue(), count


def send_schedule(schedule_id: int, now: datetime | None = None, force: bool = False) -> str:
    """Send one schedule if due (or ``force``: the last period anyway); returns what happened."""
    now = now or utcnow()
    with service_session() as session:
        schedule = session.get(ScheduledReport, schedule_id, with_for_update=True)
        group = session.get(Group, schedule.group_id)
        tz = group.timezone or "Asia/Shanghai"
        local = now.astimezone(ZoneInfo(tz))
        if force:
            schedule.last_period = None
            local = local.replace(hour=23)
        period = period_due(schedule, local)
        if period is None or not schedule.enabled:
            return "not due"
        config = session.execute(select(NotifierConfig).where(
            NotifierConfig.group_id == schedule.group_id, NotifierConfig.notifier == "email",
            NotifierConfig.enabled).order_by(NotifierConfig.id)).scalars().first()
        try:
            if config is None:
                raise LookupError("no enabled email notifier: configure SMTP under Alarms › Notifiers")
            data, count = build_xlsx(schedule, *period, tz)
            name = f"{schedule.report}-{period[0].isoformat()}.xlsx"
            with force_locale(current_app.config.get("BABEL_DEFAULT_LOCALE", "zh_CN")):
                title = f"[{group.name}] {get_report(schedule.report).name} {period[0].isoformat()}"
            message = Message(title, f"{count} rows, period {period[0]} to {period[1] - timedelta(days=1)}.")
            secrets = secret_store.reveal(config.secrets, f"{config.group_id}:{config.id}")
            for recipient in schedule.recipients:
                EmailNotifier().send(message, recipient, config.settings, secrets, attachments=[(name, data)])
        except Exception as err:
            log.exception("scheduled report %s failed", schedule_id)
            schedule.last_error = f"{err.__class__.__name__}: {err}"[:2000]
            return "failed"
        schedule.last_period, schedule.last_error = period[0], ""
        return "sent"


def run_due(now: datetime | None = None) -> dict[str, int]:
    """Periodic job: send every due schedule of every group."""
    with service_session() as session:
        ids = list(session.execute(select(ScheduledReport.id).where(ScheduledReport.enabled)
                                   .order_by(ScheduledReport.id)).scalars())
    outcome: dict[str, int] = {}
    for schedule_id in ids:
        result = send_schedule(schedule_id, now)
        outcome[result] = outcome.get(result, 0) + 1
    return outcome
