"""Usage rollups on plain PostgreSQL: ``usage_hourly`` / ``usage_daily`` / ``usage_monthly`` from ``readings``.

Usage is the delta of each cumulative counter (energy total, per TOU rate, export; water m³) between two
consecutive readings of the same meter, attributed to the bucket of the later reading. Buckets are local
hours, days and months of the meter's property time zone.

Counter drops: a counter lower than the previous value of the same meter is a reset or a meter swap. That
interval contributes **0** (never negative usage) and counts in ``resets``; the lower value is the new
baseline, so usage after the reset is counted normally. (A meter swap carries the old meter's counters over
through the swap workflow, not here.) Readings of quality *bad* are ignored.

Installation interval: a meter's usage counts only while it is installed, from ``meters.installed_at`` to
``meters.removed_at`` (both readings included, as the swap stores the old meter's final and the new meter's
initial reading at that moment); a swapped-in meter's past in the store room and a swapped-out meter's readings
after it left belong to no room, in reports, dashboards, apportioning and bills alike.

:func:`refresh_rollups` is idempotent: for every meter that received readings since ``since`` (by arrival
time, so late readings are included), it recomputes the hourly buckets from the hour of its oldest new
reading, then the affected days from the hours and the affected months from the days.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from .columns import COUNTERS, QUALITY_BAD

log = logging.getLogger(__name__)

#: Overlap of the job watermark: covers transactions that started before the last run but committed after.
WATERMARK_OVERLAP = timedelta(minutes=15)
WATERMARK_KEY = "rollups"

_SCOPE = """
CREATE TEMP TABLE rollup_scope ON COMMIT DROP AS
SELECT c.meter_id, m.group_id, p.timezone AS tz,
       COALESCE(m.installed_at, '-infinity') AS installed_at, COALESCE(m.removed_at, 'infinity') AS removed_at,
       date_trunc('hour', c.first_ts AT TIME ZONE p.timezone) AT TIME ZONE p.timezone AS start_hour
FROM (SELECT meter_id, min(ts) AS first_ts FROM readings WHERE received_at >= :since {meters} GROUP BY meter_id) c
JOIN meters m ON m.id = c.meter_id JOIN properties p ON p.id = m.property_id
"""
_VALUES = ", ".join(f"('{c}', r.{c})" for c in COUNTERS)
_BASELINES = "\nUNION ALL\n".join(
    f"SELECT s.meter_id, b.ts, '{c}' AS name, b.value FROM rollup_scope s CROSS JOIN LATERAL ("
    f"SELECT ts, {c} AS value FROM readings WHERE meter_id = s.meter_id AND ts < s.start_hour "
    f"AND ts >= s.installed_at AND ts <= s.removed_at "
    f"AND {c} IS NOT NULL AND quality <> {QUALITY_BAD} ORDER BY ts DESC LIMIT 1) b"
    for c in COUNTERS
)
_DELTAS = f"""
CREATE TEMP TABLE rollup_deltas ON COMMIT DROP AS
WITH points AS (
  SELECT r.meter_id, r.ts, q.name, q.value
  FROM rollup_scope s JOIN readings r ON r.meter_id = s.meter_id AND r.ts >= s.start_hour
   AND r.ts >= s.installed_at AND r.ts <= s.removed_at
  CROSS JOIN LATERAL (VALUES {_VALUES}) AS q(name, value)
  WHERE q.value IS NOT NULL AND r.quality <> {QUALITY_BAD}
  UNION ALL
  {_BASELINES}
), deltas AS (
  SELECT meter_id, ts, name, value - lag(value) OVER (PARTITION BY meter_id, name ORDER BY ts) AS delta
  FROM points
)
SELECT d.meter_id, s.group_id, date_trunc('hour', d.ts AT TIME ZONE s.tz) AT TIME ZONE s.tz AS bucket,
       d.ts, d.name, d.delta
FROM deltas d JOIN rollup_scope s ON s.meter_id = d.meter_id
WHERE d.ts >= s.start_hour AND d.delta IS NOT NULL
"""
_HOURLY = f"""
INSERT INTO usage_hourly (group_id, meter_id, bucket, {", ".join(COUNTERS)}, readings, resets)
SELECT group_id, meter_id, bucket,
  {", ".join(f"sum(GREATEST(delta, 0)) FILTER (WHERE name = '{c}')" for c in COUNTERS)},
  count(DISTINCT ts), count(*) FILTER (WHERE delta < 0)
FROM rollup_deltas GROUP BY group_id, meter_id, bucket
"""


def _rollup_from(table: str, source: str, unit: str, start_col: str) -> str:
    """INSERT rolling ``source`` buckets up into ``table`` buckets of ``unit`` for the scoped meters."""
    return f"""
INSERT INTO {table} (group_id, meter_id, bucket, {", ".join(COUNTERS)}, readings, resets)
SELECT u.group_id, u.meter_id, date_trunc('{unit}', u.bucket AT TIME ZONE s.tz) AT TIME ZONE s.tz,
  {", ".join(f"sum(u.{c})" for c in COUNTERS)}, sum(u.readings), sum(u.resets)
FROM {source} u JOIN rollup_scope s ON s.meter_id = u.meter_id AND u.bucket >= s.{start_col}
GROUP BY 1, 2, 3
"""


def refresh_rollups(session: Session, since: datetime, meter_ids: Collection[int] | None = None) -> int:
    """Recompute the usage rollups of every meter (of ``meter_ids``, if given) with readings received at or
    after ``since``.

    Idempotent; runs after any other refresh in progress (a transaction-level advisory lock: two refreshes of
    the same meters would both insert their buckets). Returns how many meters were refreshed. Runs in the
    caller's transaction (service role).
    """
    session.execute(text("SELECT pg_advisory_xact_lock(hashtext('meterhub.rollups'))"))
    session.execute(text("DROP TABLE IF EXISTS rollup_deltas, rollup_scope"))
    params: dict = {"since": since}
    if meter_ids is not None:
        params["ids"] = sorted({int(m) for m in meter_ids})
    session.execute(text(_SCOPE.format(meters="AND meter_id = ANY(:ids)" if meter_ids is not None else "")), params)
    meters = session.execute(text("SELECT count(*) FROM rollup_scope")).scalar_one()
    if not meters:
        return 0
    session.execute(text(
        "ALTER TABLE rollup_scope ADD COLUMN start_day timestamptz, ADD COLUMN start_month timestamptz"
    ))
    session.execute(text(
        "UPDATE rollup_scope SET "
        "start_day = date_trunc('day', start_hour AT TIME ZONE tz) AT TIME ZONE tz, "
        "start_month = date_trunc('month', start_hour AT TIME ZONE tz) AT TIME ZONE tz"
    ))
    session.execute(text("CREATE INDEX ON rollup_scope (meter_id)"))
    session.execute(text("ANALYZE rollup_scope"))
    session.execute(text(_DELTAS))
    for table, start in (("usage_hourly", "start_hour"), ("usage_daily", "start_day"),
                         ("usage_monthly", "start_month")):
        session.execute(text(
            f"DELETE FROM {table} u USING rollup_scope s WHERE u.meter_id = s.meter_id AND u.bucket >= s.{start}"
        ))
    session.execute(text(_HOURLY))
    session.execute(text(_rollup_from("usage_daily", "usage_hourly", "day", "start_day")))
    session.execute(text(_rollup_from("usage_monthly", "usage_daily", "month", "start_month")))
    session.execute(text("DROP TABLE IF EXISTS rollup_deltas, rollup_scope"))
    log.info("rollups refreshed for %d meters (readings received since %s)", meters, since.isoformat())
    return meters


def start_watermark(session: Session) -> bool:
    """After a bulk load whose rollups were refreshed in full (the demo's year of history on a first start):
    start the periodic job's watermark at the database's clock, so its first run refreshes what arrives from
    now on instead of rolling up every reading once more (minutes, on the bulk queue). Only when the job has
    never run (no watermark yet); True when it was set. Stored one overlap ahead, so that the next run's
    ``since`` (watermark minus :data:`WATERMARK_OVERLAP`) is this moment."""
    return session.execute(text(
        "INSERT INTO timeseries_state (key, at) VALUES (:k, clock_timestamp() + :overlap) "
        "ON CONFLICT (key) DO NOTHING RETURNING key"), {"k": WATERMARK_KEY, "overlap": WATERMARK_OVERLAP}
    ).first() is not None


def run_rollups(session: Session, now: datetime) -> int:
    """Periodic job: refresh from the last run's watermark (minus an overlap) and move the watermark."""
    last = session.execute(
        text("SELECT at FROM timeseries_state WHERE key = :k FOR UPDATE"), {"k": WATERMARK_KEY}
    ).scalar()
    since = (last - WATERMARK_OVERLAP) if last else datetime(1970, 1, 1, tzinfo=now.tzinfo)
    refreshed = refresh_rollups(session, since)
    session.execute(text(
        "INSERT INTO timeseries_state (key, at) VALUES (:k, :now) ON CONFLICT (key) DO UPDATE SET at = excluded.at"
    ), {"k": WATERMARK_KEY, "now": now})
    return refreshed
