"""The one query API over readings: usage per bucket, totals, latest values, raw series.

Callers never know the backend: on TimescaleDB usage comes from the continuous aggregates, on plain
PostgreSQL from the rollup tables kept by :func:`rollups.refresh_rollups`. Every query joins ``meters`` so
row-level security applies when called with the web app's session (the aggregates have no RLS of their own).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from .columns import COUNTERS, QUANTITY_COLUMNS
from .timescale import CAGGS, timescale_installed

BUCKETS = {"hour": "usage_hourly", "day": "usage_daily", "month": "usage_monthly"}
#: How far before ``start`` the TimescaleDB path looks for the previous bucket-end counter.
_LOOKBACK = {"hour": "7 days", "day": "62 days", "month": "400 days"}
_backend_cache: dict[str, bool] = {}


@dataclass(frozen=True)
class UsageRow:
    """Usage of one meter in one bucket (``None``: the meter has no such counter)."""

    meter_id: int
    bucket: datetime
    energy_kwh: Decimal | None
    energy_sharp_kwh: Decimal | None
    energy_peak_kwh: Decimal | None
    energy_flat_kwh: Decimal | None
    energy_valley_kwh: Decimal | None
    energy_export_kwh: Decimal | None
    water_m3: Decimal | None
    readings: int
    resets: int


@dataclass(frozen=True)
class Latest:
    """The newest known values of a meter: ``ts`` of the newest reading, ``good_ts`` of the newest good one."""

    meter_id: int
    ts: datetime
    good_ts: datetime | None
    quality: int
    values: dict[str, Any]


def uses_timescale(session: Session) -> bool:
    """True when this database serves usage from TimescaleDB continuous aggregates (cached per database)."""
    key = session.get_bind().url.render_as_string(hide_password=True)
    if key not in _backend_cache:
        _backend_cache[key] = timescale_installed(session.connection())
    return _backend_cache[key]


def _check_bucket(bucket: str) -> None:
    if bucket not in BUCKETS:
        raise ValueError(f"Unknown bucket {bucket!r}: use one of {', '.join(BUCKETS)}.")


def _rollup_sql(bucket: str) -> str:
    cols = ", ".join(f"u.{c}" for c in COUNTERS)
    return (
        f"SELECT u.meter_id, u.bucket, {cols}, u.readings, u.resets FROM {BUCKETS[bucket]} u "
        f"JOIN meters m ON m.id = u.meter_id "
        f"WHERE u.meter_id IN :ids AND u.bucket >= :start AND u.bucket < :end ORDER BY u.meter_id, u.bucket"
    )


def _cagg_sql(bucket: str) -> str:
    deltas = ", ".join(
        f"GREATEST(c.{col} - lag(c.{col}) OVER w, 0) AS {col}" for col in COUNTERS
    )
    resets = " + ".join(f"(c.{col} < lag(c.{col}) OVER w)::int" for col in COUNTERS)
    return (
        f"SELECT * FROM (SELECT c.meter_id, c.bucket, {deltas}, c.readings::int AS readings, "
        f"COALESCE({resets}, 0) AS resets FROM {CAGGS[bucket]} c JOIN meters m ON m.id = c.meter_id "
        f"WHERE c.meter_id IN :ids AND c.bucket >= CAST(:start AS timestamptz) - interval '{_LOOKBACK[bucket]}' "
        f"AND c.bucket < :end WINDOW w AS (PARTITION BY c.meter_id ORDER BY c.bucket)) x "
        f"WHERE x.bucket >= :start ORDER BY x.meter_id, x.bucket"
    )


def usage(session: Session, meter_ids: Sequence[int], start: datetime, end: datetime,
          bucket: str = "hour") -> list[UsageRow]:
    """Usage per meter and bucket with ``start <= bucket < end`` (bucket: hour, day or month)."""
    _check_bucket(bucket)
    if not meter_ids:
        return []
    sql = _cagg_sql(bucket) if uses_timescale(session) else _rollup_sql(bucket)
    stmt = text(sql).bindparams(bindparam("ids", expanding=True))
    rows = session.execute(stmt, {"ids": list(meter_ids), "start": start, "end": end})
    return [UsageRow(*row) for row in rows]


def total_usage(session: Session, meter_ids: Sequence[int], start: datetime, end: datetime,
                bucket: str = "hour") -> dict[int, dict[str, Decimal | None]]:
    """Usage per meter summed over the buckets in ``[start, end)``: {meter_id: {counter: total}}."""
    totals: dict[int, dict[str, Decimal | None]] = {}
    for row in usage(session, meter_ids, start, end, bucket):
        acc = totals.setdefault(row.meter_id, dict.fromkeys(COUNTERS))
        for col in COUNTERS:
            value = getattr(row, col)
            if value is not None:
                acc[col] = (acc[col] or Decimal(0)) + value
    return totals


def latest(session: Session, meter_ids: Sequence[int]) -> dict[int, Latest]:
    """The newest values of each meter in one query (a room monitor of 10,000 rooms is one call)."""
    if not meter_ids:
        return {}
    cols = ", ".join(f"l.{c}" for c in QUANTITY_COLUMNS)
    stmt = text(
        f"SELECT l.meter_id, l.ts, l.good_ts, l.quality, {cols}, l.extra FROM meter_latest l "
        f"JOIN meters m ON m.id = l.meter_id WHERE l.meter_id IN :ids"
    ).bindparams(bindparam("ids", expanding=True))
    out: dict[int, Latest] = {}
    for row in session.execute(stmt, {"ids": list(meter_ids)}):
        values = {c: v for c, v in zip(QUANTITY_COLUMNS, row[4:-1], strict=True) if v is not None}
        values.update(row[-1] or {})
        out[row[0]] = Latest(row[0], row[1], row[2], row[3], values)
    return out


def readings_between(session: Session, meter_id: int, start: datetime, end: datetime,
                     limit: int = 10_000) -> list[dict[str, Any]]:
    """Raw readings of one meter with ``start <= ts < end``, oldest first (for charts and audits)."""
    cols = ", ".join(f"r.{c}" for c in QUANTITY_COLUMNS)
    rows = session.execute(text(
        f"SELECT r.ts, r.quality, r.source, {cols}, r.extra FROM readings r JOIN meters m ON m.id = r.meter_id "
        f"WHERE r.meter_id = :meter AND r.ts >= :start AND r.ts < :end ORDER BY r.ts LIMIT :limit"
    ), {"meter": meter_id, "start": start, "end": end, "limit": limit})
    out = []
    for row in rows:
        item = {"ts": row[0], "quality": row[1], "source": row[2]}
        item.update({c: v for c, v in zip(QUANTITY_COLUMNS, row[3:-1], strict=True) if v is not None})
        item.update(row[-1] or {})
        out.append(item)
    return out
