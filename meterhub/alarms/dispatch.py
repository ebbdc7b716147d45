"""From a raised alarm to messages: recipients, throttling, quiet hours, the log, delivery with retries.

``notify_raised`` (an event job coalesced through :mod:`meterhub.soon`, requested by the ``alarm_raised``
hook; ``notify_alarm``, one alarm's job, while Redis is unreachable) writes one ``notification_log`` row per
recipient and makes the first attempt of each row that may go now at once, side by side; a failed first
attempt, and every row ``notify_alarm`` plans, is sent by ``deliver`` jobs. ``deliver`` sends and records the status;
on failure it raises so rq retries it with backoff (``NOTIFY_RETRY_INTERVALS`` seconds) and marks the row
``failed`` after the last attempt. Rows held over quiet hours are released by :func:`release_held`.
"""

from __future__ import annotations

import logging
from datetime import datetime, time, timedelta
from string import Formatter
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app
from flask_babel import force_locale
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ..i18n import _l, filled, stored
from ..db import service_session
from ..models import utcnow
from ..tenants.models import Group
from . import secrets as secret_store
from .kinds import KINDS
from .models import Alarm, NotificationLog, NotifierConfig
from .notes import MONEY_KEYS, money_text
from .texts import details, reason_message, value_text
from .notifiers import Message
from ..names import name_of, parse_subject_key, subject_names
from .registry import notifiers

log = logging.getLogger(__name__)
DEFAULT_RETRY_INTERVALS = [10, 60, 300]
NOTIFY_RAISED = "meterhub.alarms.dispatch:notify_raised"
SEND_THREADS = 8  # first attempts made side by side by notify_raised (webhooks wait on the network)
SEND_BUDGET_S = 60  # after this, the rest of a burst goes to deliver jobs (the event job's own time stays bounded)
LIVE = ("queued", "held", "retrying", "sent")


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def render(session: Session, config: NotifierConfig, alarm: Alarm, group: Group) -> Message:
    """Title and text of the message for ``alarm`` (template per kind from the config, else the default)."""
    kind = KINDS[alarm.kind]
    # each detail value as a message or text (words made in the reader's language: texts.value_text)
    words = {k: _word(k, v, alarm.detail, group) for k, v in details(alarm.kind, alarm.detail).items()}
    meter, account = ("meter", alarm.meter_id), ("account", alarm.account_id)
    subject = parse_subject_key(alarm.subject_key)
    names = subject_names(session, alarm.group_id, [meter, account, subject])  # property · building · room · ...
    words.update(group=group.name, kind=kind.label, subject=name_of(names, subject),
                 meter=name_of(names, meter) if alarm.meter_id else "?",
                 account=name_of(names, account) if alarm.account_id else "?")
    values = _Blank({k: str(v) for k, v in words.items()})
    custom = (config.settings.get("templates") or {}).get(alarm.kind)
    template = custom or str(kind.sms_template)
    try:
        body = Formatter().vformat(template, (), values)
    except (ValueError, IndexError, AttributeError):
        body = str(kind.sms_template).format_map(values)
    who = {"account": values["account"], "meter": values["meter"]}.get(kind.subject, values["subject"])
    title = f"[{group.name}] {kind.label}: {who}"
    payload = {"id": alarm.id, "group_id": alarm.group_id, "property_id": alarm.property_id, "kind": alarm.kind,
               "state": alarm.state, "subject": alarm.subject_key, "subject_name": values["subject"],
               "meter_id": alarm.meter_id,
               "account_id": alarm.account_id, "detail": alarm.detail, "raised_at": alarm.raised_at.isoformat()}
    # kept as messages too, so that the portal shows them in the tenant's language (a custom template stays as typed)
    stored_title = stored(filled(_l("[{group}] {kind}: {who}"), group=group.name, kind=kind.label, who=who), 200)
    stored_body = "" if custom else stored(filled(kind.sms_template, **words))
    return Message(title, body, payload, alarm.account_id, alarm.id, stored_title, stored_body)


def _word(key: str, value: Any, detail: dict[str, Any] | None, group: Group) -> Any:
    """A detail value for a message: money as ¥, times in the group's zone to the minute, words as messages."""
    if value is not None and key in MONEY_KEYS:
        return money_text(value)
    if value is not None and (key == "since" or key.endswith("_at")):
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return str(value)
        if moment.utcoffset() is not None:
            moment = moment.astimezone(ZoneInfo(group.timezone or "Asia/Shanghai"))
        return f"{moment:%Y-%m-%d %H:%M}"
    if key == "reason":
        return reason_message(detail)
    return value_text(key, value, detail)


def in_quiet_hours(config: NotifierConfig, now: datetime, tz: ZoneInfo) -> datetime | None:
    """When quiet hours are on at ``now``, the end of them (UTC); else None. Windows may wrap midnight."""
    if not config.quiet_start or not config.quiet_end:
        return None
    local = now.astimezone(tz)
    start, end = time.fromisoformat(config.quiet_start), time.fromisoformat(config.quiet_end)
    t = local.time().replace(tzinfo=None)
    inside = start <= t < end if start < end else (t >= start or t < end)
    if not inside:
        return None
    end_day = local.date() if t < end else local.date() + timedelta(days=1)
    return datetime.combine(end_day, end, tz).astimezone(ZoneInfo("UTC"))


def throttled(session: Session, config: NotifierConfig, recipient: str, alarm: Alarm, now: datetime) -> Any:
    """Why this message must not go, as a message (empty when it may): same alarm subject too soon, or too many
    per hour."""
    base = select(func.count()).select_from(NotificationLog).where(
        NotificationLog.config_id == config.id, NotificationLog.recipient == recipient,
        NotificationLog.status.in_(LIVE))
    recent = session.execute(base.where(
        NotificationLog.kind == alarm.kind, NotificationLog.subject_key == alarm.subject_key,
        NotificationLog.created_at > now - timedelta(minutes=config.throttle_minutes))).scalar()
    if recent:
        return _l("same alarm sent less than %(minutes)s min ago", minutes=config.throttle_minutes)
    hourly = session.execute(base.where(NotificationLog.created_at > now - timedelta(hours=1))).scalar()
    if hourly >= config.max_per_hour:
        return _l("%(count)s messages in the last hour", count=config.max_per_hour)
    return ""


def _matches(config: NotifierConfig, kind: str) -> bool:
    return not config.kinds or kind in config.kinds


def plan(session: Session, alarm: Alarm, now: datetime) -> list[int]:
    """Write the log rows for ``alarm`` (local notifiers delivered at once); ids of the rows to deliver now."""
    group = session.get(Group, alarm.group_id)
    tz = ZoneInfo(group.timezone or "Asia/Shanghai")
    registry = notifiers()
    to_send: list[int] = []
    configs = session.execute(select(NotifierConfig).where(
        NotifierConfig.group_id == alarm.group_id, NotifierConfig.enabled).order_by(NotifierConfig.id)).scalars()
    for config in configs:
        notifier = registry.get(config.notifier)
        if notifier is None or not _matches(config, alarm.kind):
            continue
        session.execute(text("SELECT pg_advisory_xact_lock(7311, :c)"), {"c": config.id})
        with force_locale(config.settings.get("locale") or current_app.config.get("BABEL_DEFAULT_LOCALE", "zh_CN")):
            message = render(session, config, alarm, group)
        for recipient in notifier.recipients(session, config, alarm):
            row = NotificationLog(group_id=alarm.group_id, alarm_id=alarm.id, config_id=config.id,
                                  notifier=config.notifier, recipient=recipient[:300], kind=alarm.kind,
                                  subject_key=alarm.subject_key, title=message.title[:200], body=message.body,
                                  created_at=now)
            reason = throttled(session, config, recipient, alarm, now)
            quiet_end = None if reason else in_quiet_hours(config, now, tz)
            if reason:
                row.status, row.error = "throttled", stored(reason)
            elif quiet_end is not None:
                row.status, row.send_after = "held", quiet_end
            elif notifier.local:
                notifier.send(message, recipient, config.settings, {}, session=session)
                row.status, row.sent_at, row.attempts = "sent", now, 1
            session.add(row)
            session.flush()
            if row.status == "queued":
                to_send.append(row.id)
    return to_send


def enqueue_deliveries(log_ids: list[int], first_done: bool = False) -> None:
    """Queue one delivery job per log row, retried with backoff (``first_done``: the first attempt was made, so
    the job waits the first interval and has one retry fewer)."""
    from rq import Retry

    from ..redis_conn import get_queue

    intervals = list(current_app.config.get("NOTIFY_RETRY_INTERVALS", DEFAULT_RETRY_INTERVALS))
    queue = get_queue("default")
    wait = timedelta(seconds=intervals.pop(0)) if first_done and intervals else None
    wait = wait or None  # no wait: at once
    for log_id in log_ids:
        options = {"retry": Retry(max=len(intervals), interval=intervals) if intervals else None,
                   "description": f"notification {log_id}"}
        if wait is not None:
            queue.enqueue_in(wait, "meterhub.jobs.run", "meterhub.alarms.dispatch:deliver", log_id=log_id, **options)
        else:
            queue.enqueue("meterhub.jobs.run", "meterhub.alarms.dispatch:deliver", log_id=log_id, **options)


def notify_alarm(alarm_id: int, now: datetime | None = None) -> int:
    """rq job: plan the messages of a raised alarm and queue their delivery; returns how many were queued."""
    now = now or utcnow()
    with service_session() as session:
        alarm = session.get(Alarm, alarm_id)
        if alarm is None or alarm.state == "cleared":
            return 0
        ids = plan(session, alarm, now)
    enqueue_deliveries(ids)
    return len(ids)


def notify_raised() -> int:
    """Event job: plan the messages of every alarm raised since the last run (each in its own transaction) and
    make their first attempts at once, :data:`SEND_THREADS` side by side; returns how many were sent.

    A burst of alarms costs one job, not two per alarm (was ~30 s for 60 alarms on one worker). A failed
    attempt is retried by a ``deliver`` job; an alarm whose planning fails gets a ``notify_alarm`` job."""
    from .. import soon

    now, ids = utcnow(), []
    for alarm_id in soon.take(NOTIFY_RAISED):
        try:
            with service_session() as session:
                alarm = session.get(Alarm, alarm_id)
                if alarm is not None and alarm.state != "cleared":
                    ids += plan(session, alarm, now)
        except Exception:  # noqa: BLE001 - the others go on; this one is tried again in a job of its own
            log.exception("notifications of alarm %s not planned now; queued in a job of its own", alarm_id)
            _notify_later(alarm_id)
    return send_now(ids)


def _notify_later(alarm_id: int) -> None:
    """``notify_alarm`` for one alarm in a job of its own (rq keeps it in the failed registry if it fails)."""
    from ..redis_conn import get_queue

    try:
        get_queue("default").enqueue("meterhub.jobs.run", "meterhub.alarms.dispatch:notify_alarm",
                                     alarm_id=alarm_id, description=f"notify alarm {alarm_id}")
    except Exception:  # noqa: BLE001 - never lose the rest of the burst over one alarm
        log.exception("alarm %s: its notifications could not be queued", alarm_id)


def send_now(log_ids: list[int]) -> int:
    """First delivery attempt of each row, side by side; the failed ones go to ``deliver`` jobs. Sent count."""
    if not log_ids:
        return 0
    from concurrent.futures import ThreadPoolExecutor

    import time as clock

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    deadline = clock.monotonic() + SEND_BUDGET_S

    def one(log_id: int) -> bool | None:
        if clock.monotonic() > deadline:
            return None  # not tried here: a deliver job of its own (the job's time is bounded)
        with app.app_context():
            try:
                return _attempt(log_id, lambda: False)[1] is None
            except Exception:  # noqa: BLE001 - the database blinked: the deliver job tries again
                log.exception("notification %s: first attempt not recorded", log_id)
                return False

    with ThreadPoolExecutor(max_workers=min(SEND_THREADS, len(log_ids)), thread_name_prefix="notify") as pool:
        ok = list(pool.map(one, log_ids))
    failed = [log_id for log_id, sent in zip(log_ids, ok) if sent is False]
    untried = [log_id for log_id, sent in zip(log_ids, ok) if sent is None]
    if failed:
        enqueue_deliveries(failed, first_done=True)
    if untried:
        enqueue_deliveries(untried)
    return len(log_ids) - len(failed) - len(untried)


def deliver(log_id: int) -> str:
    """rq job: send one logged message; raise on failure so rq retries it (``failed`` after the last try)."""
    status, error = _attempt(log_id, _last_attempt)
    if error is not None:
        raise error
    return status


def _attempt(log_id: int, last: Any) -> tuple[str, Exception | None]:
    """Send one logged message and record the outcome; (status, the error of a failed attempt). ``last()``
    tells whether a failure is final (``failed``) or will be retried (``retrying``)."""
    with service_session() as session:
        row = session.get(NotificationLog, log_id, with_for_update=True)
        if row is None or row.status in ("sent", "throttled"):
            return (row.status if row else "missing"), None
        config = session.get(NotifierConfig, row.config_id) if row.config_id else None
        if config is None:
            row.status, row.error = "failed", stored(_l("its notifier configuration was deleted"))
            return row.status, None
        row.attempts += 1
        message = Message(row.title, row.body, _payload(session, row), None, row.alarm_id)
        settings, sealed, owner = dict(config.settings), dict(config.secrets), f"{config.group_id}:{config.id}"
        notifier, recipient = notifiers().get(row.notifier), row.recipient
    try:
        if notifier is None:
            raise LookupError(f"notifier {row.notifier!r} is not installed")
        notifier.send(message, recipient, settings, secret_store.reveal(sealed, owner))
    except Exception as err:  # noqa: BLE001 - returned to the caller, which raises it or queues a retry
        status = "failed" if last() else "retrying"
        _finish(log_id, status, str(err)[:2000])
        log.warning("notification %s to %s failed: %s", log_id, recipient, err)
        return status, err
    _finish(log_id, "sent", "")
    return "sent", None


def _payload(session: Session, row: NotificationLog) -> dict[str, Any]:
    alarm = session.get(Alarm, row.alarm_id) if row.alarm_id else None
    if alarm is None:
        return {"group_id": row.group_id, "kind": row.kind, "subject": row.subject_key}
    return {"id": alarm.id, "group_id": alarm.group_id, "property_id": alarm.property_id, "kind": alarm.kind,
            "state": alarm.state, "subject": alarm.subject_key, "meter_id": alarm.meter_id,
            "account_id": alarm.account_id, "detail": alarm.detail, "raised_at": alarm.raised_at.isoformat()}


def _last_attempt() -> bool:
    from rq import get_current_job

    job = get_current_job()
    return job is None or not job.retries_left


def _finish(log_id: int, status: str, error: str) -> None:
    with service_session() as session:
        row = session.get(NotificationLog, log_id)
        row.status, row.error = status, error
        if status == "sent":
            row.sent_at = utcnow()


def release_held(now: datetime | None = None) -> int:
    """Queue the messages whose quiet hours are over; returns how many."""
    now = now or utcnow()
    with service_session() as session:
        ids = list(session.execute(text(
            "UPDATE notification_log SET status = 'queued' WHERE id IN (SELECT id FROM notification_log "
            "WHERE status = 'held' AND send_after <= :now FOR UPDATE SKIP LOCKED) RETURNING id"),
            {"now": now}).scalars())
    if ids:
        enqueue_deliveries(ids)
    return len(ids)
