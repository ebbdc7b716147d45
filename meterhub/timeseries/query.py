"""The one query API over readings: usage per bucket, totals, latest values, raw series.

Callers never know the backend: on TimescaleDB usage comes from the continuous aggregates (:mod:`cagg_usage`),
on plain PostgreSQL from the rollup tables kept by :func:`rollups.refresh_rollups`, with the same numbers.
Both are read through the ``tenant_*`` views (:mod:`tenant_views`): with the web app's session they show the
transaction's group only; the app role has no privilege on the tables and aggregates themselves.

Usage over many buckets is fetched column-wise (:func:`usage_series`): one row per meter holding arrays of
its buckets and of each counter, streamed with ``COPY ... TO STDOUT`` and converted while the database is
still producing the next meters. A report of 1,000 meters over 30 days is then 1,000 rows instead of 30,000,
and the values become Python objects in C loops (``map``/``zip``) rather than one Python call per value.
"""

from __future__ import annotations

import gc
import io
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, Inexact, InvalidOperation, Rounded
from functools import partial
from itertools import repeat
from typing import Any, NamedTuple

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from .columns import COUNTERS, QUANTITY_COLUMNS
from .cagg_usage import usage_rows_sql
from .tenant_views import READINGS_VIEW, USAGE_VIEWS
from .timescale import timescale_installed

#: The view of the rollup table of each bucket (plain PostgreSQL), see :mod:`tenant_views`.
BUCKETS = {"hour": USAGE_VIEWS["usage_hourly"], "day": USAGE_VIEWS["usage_daily"],
           "month": USAGE_VIEWS["usage_monthly"]}
#: Columns :func:`usage_series` can return: the counters' usage (exact) and the bucket's reading/reset counts.
SERIES_COLUMNS: tuple[str, ...] = (*COUNTERS, "readings", "resets")
_INTS = frozenset(("readings", "resets"))
#: Exact text -> Decimal (nothing can round at this precision; if anything did, it would raise). Its
#: ``create_decimal`` is ~10-15 % cheaper per value than the ``Decimal()`` constructor (no keyword parsing),
#: which counts at 150,000 values per report.
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[InvalidOperation, Inexact, Rounded])
_backend_cache: dict[str, bool] = {}


class UsageRow(NamedTuple):
    """Usage of one meter in one bucket (``None``: the meter has no such counter).

    A named tuple (immutable, fields by name): built at C speed from the column arrays, where a frozen
    dataclass cost ~3.5 µs per row in ``__init__`` (100 ms for a month of days of 1,000 meters).
    """

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


_usage_row = partial(tuple.__new__, UsageRow)


@dataclass(frozen=True, slots=True)
class MeterSeries:
    """Usage of one meter over a bucket range, column-wise: ``values[col][i]`` belongs to ``buckets[i]``.

    ``buckets`` are the bucket starts as Unix seconds, ascending; meters with the same buckets share one
    tuple object (so callers can work per distinct bucket list, e.g. format period labels once).
    """

    meter_id: int
    buckets: tuple[int, ...]
    values: dict[str, list[Any]]


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


def _arrays(columns: Sequence[str], source: str) -> str:
    """One array per column aggregated over a meter's buckets (NULL when the column is NULL throughout)."""
    return ", ".join(f"CASE WHEN count({source}.{c}) > 0 THEN array_agg({source}.{c}) END" for c in columns)


def _series_rollup_sql(bucket: str, columns: Sequence[str]) -> str:
    """Per meter, its buckets and the usage arrays from the rollup table.

    The rows come from an index-only scan of the covering primary key (migration 0011) in ``(meter_id,
    bucket)`` order, so the arrays are in bucket order and the aggregation streams meter by meter. Buckets go
    out as whole Unix seconds (they are truncated hours, days or months).
    """
    cols = ", ".join(f"u.{c}" for c in columns)
    return (
        f"SELECT u.meter_id, array_agg(date_part('epoch', u.bucket)::int8), {_arrays(columns, 'u')} "
        f"FROM (SELECT u.meter_id, u.bucket, {cols} FROM {BUCKETS[bucket]} u WHERE u.meter_id = ANY(%(ids)s) "
        f"AND u.bucket >= %(start)s AND u.bucket < %(end)s ORDER BY u.meter_id, u.bucket) u "
        f"GROUP BY u.meter_id ORDER BY u.meter_id"
    )


def _series_cagg_sql(bucket: str, columns: Sequence[str]) -> str:
    """The same shape as :func:`_series_rollup_sql` from the continuous aggregates (:mod:`cagg_usage`)."""
    return (
        f"SELECT x.meter_id, array_agg(date_part('epoch', x.bucket)::int8), {_arrays(columns, 'x')} "
        f"FROM ({usage_rows_sql(bucket)} ORDER BY 1, 2) x GROUP BY x.meter_id ORDER BY x.meter_id"
    )


def usage_relation(session: Session, bucket: str) -> str:
    """A relation (table, view or parenthesized query) of usage rows ``(meter_id, bucket, <counters>,
    readings, resets)`` for SQL that binds ``%(ids)s``, ``%(start)s`` and ``%(end)s`` and filters on them,
    read through the tenant views on either backend."""
    _check_bucket(bucket)
    return f"({usage_rows_sql(bucket)})" if uses_timescale(session) else BUCKETS[bucket]


class _SeriesSink(io.TextIOBase):
    """Receives ``COPY ... TO STDOUT`` text one meter row at a time (libpq hands over whole rows) and converts
    it right away, while the database streams the next meters. Fields: meter id, bucket array, one array (or
    ``\\N``) per column."""

    def __init__(self, columns: Sequence[str], missing: Any) -> None:
        self.columns = columns
        self.convert: list[Callable[[str], Any]] = [int if c in _INTS else _EXACT.create_decimal for c in columns]
        self.missing = missing
        self.series: list[MeterSeries] = []
        self._buckets: dict[str, tuple[int, ...]] = {}

    def writable(self) -> bool:
        return True

    def write(self, line: str) -> int:  # type: ignore[override]
        meter_id, buckets_text, *arrays = line.rstrip("\n").split("\t")
        buckets = self._buckets.get(buckets_text)
        if buckets is None:
            buckets = self._buckets[buckets_text] = tuple(map(int, buckets_text[1:-1].split(",")))
            if any(a >= b for a, b in zip(buckets, buckets[1:])):  # the SQL orders them; checked once per list
                raise RuntimeError(f"usage buckets of meter {meter_id} are not in ascending order")
        values: dict[str, list[Any]] = {}
        missing = self.missing
        for column, convert, array in zip(self.columns, self.convert, arrays, strict=True):
            if array == "\\N":
                values[column] = [missing] * len(buckets)
            elif "NULL" in array:
                values[column] = [missing if v == "NULL" else convert(v) for v in array[1:-1].split(",")]
            else:
                values[column] = list(map(convert, array[1:-1].split(",")))
        self.series.append(MeterSeries(int(meter_id), buckets, values))
        return len(line)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building tens of thousands of acyclic objects (rows of numbers
    and strings): each 700 new container objects would otherwise trigger a collection that also walks the
    growing result lists (bench, 30,000-row report: ~55 collections per run, ~4 with the pause; ~5 ms less
    CPU at the median). Nothing here creates reference cycles, so the collector has nothing to find
    meanwhile; it runs again right after. Leaves it off if it was off already."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def usage_series(session: Session, meter_ids: Sequence[int], start: datetime, end: datetime,
                 bucket: str = "hour", columns: Sequence[str] = SERIES_COLUMNS,
                 missing: Any = None) -> list[MeterSeries]:
    """Usage of each meter with buckets in ``[start, end)``, column-wise, ordered by meter id (meters without
    buckets are left out). ``columns`` picks from :data:`SERIES_COLUMNS`; a NULL value (the meter has no such
    counter) becomes ``missing``. Same answer on TimescaleDB and plain PostgreSQL."""
    _check_bucket(bucket)
    unknown = set(columns) - set(SERIES_COLUMNS)
    if unknown:
        raise ValueError(f"Unknown usage columns: {', '.join(sorted(unknown))}")
    if not meter_ids:
        return []
    sql = (_series_cagg_sql if uses_timescale(session) else _series_rollup_sql)(bucket, columns)
    sink = _SeriesSink(columns, missing)
    # The DB-API cursor of the session's own connection: same transaction, same RLS setting.
    cursor = session.connection().connection.cursor()
    try:
        query = cursor.mogrify(sql, {"ids": [int(i) for i in meter_ids], "start": start, "end": end})
        with gc_paused():
            cursor.copy_expert(f"COPY ({query.decode()}) TO STDOUT", sink)
    finally:
        cursor.close()
    return sink.series


def bucket_datetimes(session: Session, epochs: Sequence[int]) -> dict[int, datetime]:
    """Bucket starts (Unix seconds) as the datetimes the database returns for them (its session time zone)."""
    if not epochs:
        return {}
    rows = session.execute(text("SELECT e, to_timestamp(e) FROM unnest(CAST(:e AS bigint[])) e"),
                           {"e": sorted(set(epochs))})
    return dict(rows.all())


def usage(session: Session, meter_ids: Sequence[int], start: datetime, end: datetime,
          bucket: str = "hour") -> list[UsageRow]:
    """Usage per meter and bucket with ``start <= bucket < end`` (bucket: hour, day or month), ordered by
    meter id, then bucket."""
    series = usage_series(session, meter_ids, start, end, bucket)
    if not series:
        return []
    # each distinct bucket list once: the datetimes of a month of days are 30 objects, not one per row
    times: dict[int, list[datetime]] = {}
    epochs = {id(s.buckets): s.buckets for s in series}
    moments = bucket_datetimes(session, [e for b in epochs.values() for e in b])
    for key, buckets in epochs.items():
        times[key] = [moments[e] for e in buckets]
    rows: list[UsageRow] = []
    with gc_paused():
        for s in series:
            values = s.values
            rows += map(_usage_row, zip(repeat(s.meter_id), times[id(s.buckets)],
                                        *[values[c] for c in SERIES_COLUMNS]))
    return rows


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
        f"SELECT r.ts, r.quality, r.source, {cols}, r.extra FROM {READINGS_VIEW} r JOIN meters m ON m.id = r.meter_id "
        f"WHERE r.meter_id = :meter AND r.ts >= :start AND r.ts < :end ORDER BY r.ts LIMIT :limit"
    ), {"meter": meter_id, "start": start, "end": end, "limit": limit})
    out = []
    for row in rows:
        item = {"ts": row[0], "quality": row[1], "source": row[2]}
        item.update({c: v for c, v in zip(QUANTITY_COLUMNS, row[3:-1], strict=True) if v is not None})
        item.update(row[-1] or {})
        out.append(item)
    return out
