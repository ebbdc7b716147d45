"""Dashboard rollups: usage per property, utility and local day, and the month's biggest meters per property.

A dashboard over 100,000 meters reads these few hundred rows instead of the meters' daily usage. They are made
from the usage rollups through :func:`query.usage_relation` (rollup tables or continuous aggregates alike) by
:func:`refresh_job` every few minutes: today and yesterday each time, the whole window (``WINDOW_DAYS``) for a
property that has gaps (first run, new property). Electricity is the meters' ``energy_kwh`` in kWh, water their
``water_m3`` in m³.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, Date, DateTime, ForeignKey, Integer, Numeric, SmallInteger, String, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from ..extensions import db
from ..models import TenantMixin, utcnow
from .query import usage_relation

log = logging.getLogger(__name__)
WINDOW_DAYS = 62  # this month and last, and the 30-day trend
TOP = 10
UNITS = {"electricity": "kWh", "water": "m³"}
_USAGE = "CASE WHEN m.utility = 'water' THEN u.water_m3 ELSE u.energy_kwh END"


class UsagePropertyDaily(TenantMixin, db.Model):
    """Usage of a property's meters of one utility on one local day (migration 0023)."""

    __tablename__ = "usage_property_daily"
    property_id: Mapped[int] = mapped_column(ForeignKey("properties.id", ondelete="CASCADE"), primary_key=True)
    utility: Mapped[str] = mapped_column(String(16), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    usage: Mapped[Decimal] = mapped_column(Numeric(18, 4), nullable=False)
    meters: Mapped[int] = mapped_column(Integer, nullable=False)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class UsageTopMeter(TenantMixin, db.Model):
    """One of the ``TOP`` biggest meters of a property and utility in a local month (rank 1 is the biggest)."""

    __tablename__ = "usage_top_meters"
    property_id: Mapped[int] = mapped_column(ForeignKey("properties.id", ondelete="CASCADE"), primary_key=True)
    utility: Mapped[str] = mapped_column(String(16), primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    rank: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    meter_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("meters.id", ondelete="CASCADE"), nullable=False)
    usage: Mapped[Decimal] = mapped_column(Numeric(18, 4), nullable=False)


def _run(session: Session, sql: str, params: dict) -> list[tuple]:
    """Run psycopg2-style SQL (as :func:`query.usage_relation` wants) on the session's own connection."""
    cursor = session.connection().connection.cursor()
    try:
        cursor.execute(sql, params)
        return cursor.fetchall()
    finally:
        cursor.close()


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, datetime.min.time(), zone)


def refresh_property(session: Session, group_id: int, property_id: int, tz: str, now: datetime,
                     days: int = 2) -> int:
    """Recompute the last ``days`` local days (today included) and this month's top meters of one property."""
    zone = ZoneInfo(tz)
    today = now.astimezone(zone).date()
    first = today - timedelta(days=days - 1)
    ids = [r[0] for r in session.execute(text("SELECT id FROM meters WHERE property_id = :p"), {"p": property_id})]
    if not ids:
        return 0
    params = {"ids": ids, "tz": tz}
    rows = _run(session, (
        f"SELECT m.utility, (u.bucket AT TIME ZONE %(tz)s)::date, coalesce(sum({_USAGE}), 0), count({_USAGE}) "
        f"FROM {usage_relation(session, 'day')} u JOIN meters m ON m.id = u.meter_id "
        f"WHERE u.meter_id = ANY(%(ids)s) AND u.bucket >= %(start)s AND u.bucket < %(end)s GROUP BY 1, 2"),
        {**params, "start": _local_midnight(first, zone), "end": _local_midnight(today + timedelta(days=1), zone)})
    session.execute(text("DELETE FROM usage_property_daily WHERE property_id = :p AND day >= :first"),
                    {"p": property_id, "first": first})
    if rows:
        session.execute(text(
            "INSERT INTO usage_property_daily (group_id, property_id, utility, day, usage, meters, computed_at) "
            "VALUES (:g, :p, :u, :d, :v, :n, :at)"),
            [{"g": group_id, "p": property_id, "u": u, "d": d, "v": v, "n": n, "at": now} for u, d, v, n in rows])
    month = today.replace(day=1)
    next_month = (month + timedelta(days=32)).replace(day=1)
    top = _run(session, (
        f"SELECT utility, rank, meter_id, usage FROM (SELECT m.utility, u.meter_id, {_USAGE} AS usage, "
        f"row_number() OVER (PARTITION BY m.utility ORDER BY {_USAGE} DESC, u.meter_id) AS rank "
        f"FROM {usage_relation(session, 'month')} u JOIN meters m ON m.id = u.meter_id "
        f"WHERE u.meter_id = ANY(%(ids)s) AND u.bucket >= %(start)s AND u.bucket < %(end)s "
        f"AND {_USAGE} > 0) t WHERE rank <= {TOP}"),
        {**params, "start": _local_midnight(month, zone), "end": _local_midnight(next_month, zone)})
    session.execute(text("DELETE FROM usage_top_meters WHERE property_id = :p AND month = :m"),
                    {"p": property_id, "m": month})
    if top:
        session.execute(text(
            "INSERT INTO usage_top_meters (group_id, property_id, utility, month, rank, meter_id, usage) "
            "VALUES (:g, :p, :u, :m, :r, :id, :v)"),
            [{"g": group_id, "p": property_id, "u": u, "m": month, "r": r, "id": i, "v": v} for u, r, i, v in top])
    return len(rows)


def refresh_all(session: Session, now: datetime | None = None) -> int:
    """Refresh every property: today and yesterday, or the whole window the first time (``timeseries_state``
    remembers the properties done)."""
    now = now or utcnow()
    props = session.execute(text(
        "SELECT p.id, p.group_id, p.timezone, s.key IS NOT NULL FROM properties p LEFT JOIN timeseries_state s "
        "ON s.key = 'property_usage:' || p.id ORDER BY p.id")).all()
    done = 0
    for prop_id, group_id, tz, filled in props:
        done += refresh_property(session, group_id, prop_id, tz, now, 2 if filled else WINDOW_DAYS)
        if not filled:
            session.execute(text("INSERT INTO timeseries_state (key, at) VALUES (:k, :at) ON CONFLICT (key) "
                                 "DO UPDATE SET at = excluded.at"), {"k": f"property_usage:{prop_id}", "at": now})
    return done


def refresh_job() -> int:
    """Periodic job (registered by the core plugin)."""
    from ..db import service_session

    with service_session() as session:
        rows = refresh_all(session)
    log.info("property usage rollup: %d rows", rows)
    return rows
