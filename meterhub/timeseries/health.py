"""Device health: offline detection, recovery, last-seen times and communication-fault counters.

A meter is *offline* when its newest good reading (``meter_latest.good_ts``) is older than its offline window:
``OFFLINE_FACTOR`` × the property's ``reading_interval_min`` unless a window is given. A device is offline
when all its active meters are, a gateway when all its devices are. Every transition is written to
``health_events`` and returned, so the alarm engine can raise / clear offline alarms from it
(:func:`notify_health` calls the ``health_changed`` plugin hook when one is declared).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

OFFLINE_FACTOR = 3


@dataclass(frozen=True)
class HealthTransition:
    """One object changed health: ``event`` is ``offline`` or ``online``."""

    group_id: int
    object_type: str  # meter | device | gateway
    object_id: int
    event: str
    at: datetime


def _window_sql(window: timedelta | None, factor: int) -> str:
    if window is not None:
        return "CAST(:window AS interval)"
    return f"make_interval(mins => p.reading_interval_min * {int(factor)})"


_RECORD = """
, ev AS (
  INSERT INTO health_events (group_id, at, object_type, object_id, event, detail)
  SELECT group_id, :now, '{kind}', id, status, jsonb_build_object('last_seen_at', last_seen_at) FROM changed
  RETURNING group_id, object_id, event
)
SELECT group_id, object_id, event FROM ev ORDER BY object_id
"""


def _meters_sql(window_sql: str) -> str:
    return f"""
WITH state AS (
  SELECT m.id, l.good_ts,
         CASE WHEN l.good_ts >= CAST(:now AS timestamptz) - {window_sql} THEN 'online'
              WHEN l.good_ts IS NOT NULL OR m.created_at < CAST(:now AS timestamptz) - {window_sql} THEN 'offline'
              ELSE m.status END AS status
  FROM meters m JOIN properties p ON p.id = m.property_id LEFT JOIN meter_latest l ON l.meter_id = m.id
  WHERE m.active
), changed AS (
  UPDATE meters m SET status = s.status, last_seen_at = GREATEST(m.last_seen_at, s.good_ts)
  FROM state s WHERE m.id = s.id AND m.status IS DISTINCT FROM s.status
  RETURNING m.group_id, m.id, m.status, m.last_seen_at
), seen AS (
  UPDATE meters m SET last_seen_at = s.good_ts FROM state s
  WHERE m.id = s.id AND m.status = s.status AND s.good_ts > COALESCE(m.last_seen_at, '-infinity')
)""" + _RECORD.format(kind="meter")


def _parents_sql(table: str, child_table: str, child_fk: str, kind: str) -> str:
    return f"""
WITH state AS (
  SELECT c.{child_fk} AS id, max(c.last_seen_at) AS seen,
         CASE WHEN bool_or(c.status = 'online') THEN 'online'
              WHEN bool_and(c.status = 'offline') THEN 'offline' ELSE NULL END AS status
  FROM {child_table} c {"WHERE c.active" if child_table == "meters" else ""} GROUP BY c.{child_fk}
), changed AS (
  UPDATE {table} t SET status = s.status, last_seen_at = GREATEST(t.last_seen_at, s.seen)
  FROM state s WHERE t.id = s.id AND s.status IS NOT NULL AND t.status IS DISTINCT FROM s.status
  RETURNING t.group_id, t.id, t.status, t.last_seen_at
), seen AS (
  UPDATE {table} t SET last_seen_at = s.seen FROM state s
  WHERE t.id = s.id AND (s.status IS NULL OR t.status = s.status) AND s.seen > COALESCE(t.last_seen_at, '-infinity')
)""" + _RECORD.format(kind=kind)


def detect_offline(session: Session, now: datetime, window: timedelta | None = None,
                   factor: int = OFFLINE_FACTOR) -> list[HealthTransition]:
    """Periodic job: mark meters, devices and gateways offline / online; record and return the transitions.

    ``window``: a fixed offline window for every meter; default ``factor`` × the property's reading interval.
    Meters never read stay ``unknown`` until they are older than the window. Runs as the service role.
    """
    transitions: list[HealthTransition] = []
    steps = (
        ("meter", _meters_sql(_window_sql(window, factor))),
        ("device", _parents_sql("devices", "meters", "device_id", "device")),
        ("gateway", _parents_sql("gateways", "devices", "gateway_id", "gateway")),
    )
    params = {"now": now, "window": window}
    for kind, sql in steps:
        for group_id, object_id, event in session.execute(text(sql), params):
            transitions.append(HealthTransition(group_id, kind, object_id, event, now))
    for t in transitions:
        log.info("%s %s of group %s is %s", t.object_type, t.object_id, t.group_id, t.event)
    return transitions


def notify_health(transitions: Sequence[HealthTransition]) -> None:
    """Call the ``health_changed(group_id, transitions)`` plugin hook per group (after commit)."""
    if not transitions:
        return
    from meterhub.plugins import get_plugin_manager

    hook = get_plugin_manager().hook.health_changed
    by_group: dict[int, list[HealthTransition]] = {}
    for t in transitions:
        by_group.setdefault(t.group_id, []).append(t)
    for group_id, items in by_group.items():
        try:
            hook(group_id=group_id, transitions=items)
        except Exception:
            log.exception("a health_changed hook failed for group %s", group_id)


def record_fault(session: Session, *, gateway_id: int | None = None, device_id: int | None = None,
                 count: int = 1) -> None:
    """Count communication faults (timeouts, CRC errors, refused connections) of a gateway and/or device."""
    if gateway_id is not None:
        session.execute(text("UPDATE gateways SET fault_count = fault_count + :n WHERE id = :id"),
                        {"n": count, "id": gateway_id})
    if device_id is not None:
        session.execute(text("UPDATE devices SET fault_count = fault_count + :n WHERE id = :id"),
                        {"n": count, "id": device_id})


def record_seen(session: Session, at: datetime, *, gateway_id: int | None = None,
                device_id: int | None = None) -> None:
    """A gateway / device answered at ``at``: move its last-seen time forward (never back)."""
    for table, object_id in (("gateways", gateway_id), ("devices", device_id)):
        if object_id is not None:
            session.execute(text(
                f"UPDATE {table} SET last_seen_at = :at WHERE id = :id "
                f"AND (last_seen_at IS NULL OR last_seen_at < :at)"
            ), {"at": at, "id": object_id})


def reset_faults(session: Session, *, gateway_id: int | None = None, device_id: int | None = None) -> None:
    """Set the fault counters of a gateway and/or device back to zero (an operator acknowledged them)."""
    for table, object_id in (("gateways", gateway_id), ("devices", device_id)):
        if object_id is not None:
            session.execute(text(f"UPDATE {table} SET fault_count = 0 WHERE id = :id"), {"id": object_id})
