"""Usage for tests, written as production gets it: cumulative readings through ``ingest``, so that the rollup
tables (plain PostgreSQL) and the continuous aggregates (TimescaleDB) both hold it, fresh at once."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from meterhub.timeseries.ingest import Reading, ingest

#: Where in its day the reading of a day's usage lies (late in the day: one hourly bucket, 23:00).
DAY_READING = time(23, 30)
BASE = Decimal(1000)


def day_at(day: date, tz: ZoneInfo) -> datetime:
    """The time of the reading that carries ``day``'s usage."""
    return datetime.combine(day, DAY_READING, tz)


def write_usage(app, entries: Iterable[tuple[int, int, datetime, Mapping[str, object]]]) -> None:
    """``entries``: (group_id, meter_id, reading time, usage per counter). Each meter gets a baseline reading a
    minute before its first entry, then one reading per entry with its counters grown by the usage, so the
    usage lands in the buckets of the reading times. Entries of a meter may come in any order (each meter is
    written once, in time order, by this call)."""
    by_meter: dict[tuple[int, int], dict[datetime, dict[str, Decimal]]] = defaultdict(dict)
    for group_id, meter_id, at, usage in entries:
        slot = by_meter[(group_id, meter_id)].setdefault(at, {})
        for counter, value in usage.items():
            slot[counter] = slot.get(counter, Decimal(0)) + Decimal(str(value))
    readings = []
    for (group_id, meter_id), slots in by_meter.items():
        counters = sorted({c for usage in slots.values() for c in usage})
        total = dict.fromkeys(counters, BASE)
        first = min(slots)
        readings.append(Reading(group_id, meter_id, first - timedelta(minutes=1), dict(total)))
        for at in sorted(slots):
            for counter in counters:
                total[counter] += slots[at].get(counter, Decimal(0))
            readings.append(Reading(group_id, meter_id, at, dict(total)))
    with app.app_context():
        result = ingest(readings)
    assert result.stored == len(readings), result


def refresh_usage(meter_ids: Iterable[int], since: datetime) -> None:
    """Readings written by hand (SQL, not ``ingest``) from ``since`` on reach the usage, as each backend keeps
    it: the rollups of ``meter_ids`` (plain PostgreSQL) or the aggregates over the range (TimescaleDB). Needs an
    app context."""
    from meterhub.db import service_engine, service_session
    from meterhub.timeseries.freshness import refresh_aggregates, uses_timescale
    from meterhub.timeseries.rollups import refresh_rollups

    engine = service_engine()
    if uses_timescale(engine):
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            refresh_aggregates(conn, since, force=True)
    else:
        with service_session() as s:
            refresh_rollups(s, datetime(1970, 1, 1, tzinfo=since.tzinfo), list(meter_ids))
