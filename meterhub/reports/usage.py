"""Usage reports from the rollups API: energy/water per meter, room, building or property and period,
with the TOU split; and the comprehensive monthly report (cost, peak/valley share, MoM and YoY)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from decimal import Decimal
from itertools import chain, repeat
from operator import add

from flask_babel import lazy_gettext as _l
from sqlalchemy import text
from sqlalchemy.orm import Session

from ..timeseries import query
from .filters import MeterInfo, ReportFilter, selected_meters
from .registry import Column, ReportDefinition

RATES = ("sharp", "peak", "flat", "valley")
CHUNK = 250  # meters per rollup query: bounds memory of long exports
ZERO = Decimal(0)


def _group_key(meter: MeterInfo, level: str) -> tuple:
    """(sort key..., labels) of the row a meter adds to at this level."""
    if level == "property":
        return (meter.property_id, meter.property, "", "", "", meter.utility)
    if level == "building":
        return (meter.building_id or 0, meter.property, meter.building, "", "", meter.utility)
    if level == "room":
        return (meter.room_id or 0, meter.property, meter.building, meter.room, "", meter.utility)
    return (meter.id, meter.property, meter.building, meter.room, meter.name, meter.utility)


def period_label(bucket_local: date, granularity: str) -> str:
    if granularity == "year":
        return f"{bucket_local.year:04d}"
    if granularity == "month":
        return f"{bucket_local.year:04d}-{bucket_local.month:02d}"
    return bucket_local.isoformat()


def _amounts(row: query.UsageRow, utility: str) -> list[Decimal]:
    if utility == "water":
        return [row.water_m3 or ZERO, ZERO, ZERO, ZERO, ZERO]
    return [row.energy_kwh or ZERO, *[getattr(row, f"energy_{r}_kwh") or ZERO for r in RATES]]


def usage_rows(session: Session, f: ReportFilter) -> Iterator[tuple]:
    """(period, property, building, room, meter, utility, total, sharp, peak, flat, valley) per level row.

    A meter- or room-level report whose periods are the rollup's own buckets (daily report from the daily
    buckets, monthly from the monthly ones) is built from the column-wise usage series (:func:`_series_rows`,
    both backends; :func:`_from_series` says when). Otherwise, on plain PostgreSQL the rollup tables are summed
    in SQL (:func:`_grouped_sql`); on TimescaleDB the rows come through :func:`query.usage` (continuous
    aggregates).
    Meter-level rows stream per chunk of meters so an export of any length runs in bounded memory.
    """
    meters = selected_meters(session, f)
    bucket = "day" if f.granularity == "day" else "month"
    if f.level == "meter":  # rows come ordered by meter, then period
        chunk = max(1, min(len(meters), ROWS_PER_QUERY // _periods(f, bucket))) if meters else 1
        for i in range(0, len(meters), chunk):
            yield from _level_rows(session, meters[i:i + chunk], f, bucket)
        return
    yield from _level_rows(session, meters, f, bucket)


def _level_rows(session: Session, meters: list[MeterInfo], f: ReportFilter, bucket: str) -> Iterable[tuple]:
    if query.uses_timescale(session):
        if _from_series(meters, f, bucket):
            rows = _series_rows(session, meters, f, bucket)
            if rows is not None:
                return rows
        return _aggregate(session, meters, f, bucket, f.tz)
    return _aggregate_sql(session, meters, f, bucket, f.tz)


def _from_series(meters: list[MeterInfo], f: ReportFilter, bucket: str) -> bool:
    """Whether the rows come from the usage series: the report's periods are the rollup's own buckets, and the
    level is the meter or the room. A room has a meter or a few, so its rows are about as many as the series'
    (bench_reports: 56 ms against 159 for the database's sums); a building's or a property's are far fewer, and
    the database's sums win (41 ms against 65). At room level every meter of the selection is read at once, so
    only while the series stay small."""
    if f.granularity != bucket or f.level not in ("meter", "room"):
        return False
    return f.level == "meter" or len(meters) * _periods(f, bucket) <= ROWS_PER_QUERY


def _periods(f: ReportFilter, bucket: str) -> int:
    """At most how many buckets of a meter the report's period holds."""
    return max(1, (f.end - f.start).days if bucket == "day" else (f.end - f.start).days // 28 + 1)


ROWS_PER_QUERY = 200_000
_LEVEL_SQL = {"meter": "m.id", "room": "coalesce(m.room_id, 0)", "building": "coalesce(r.building_id, 0)",
              "property": "m.property_id"}
_PERIOD_SQL = {"day": "YYYY-MM-DD", "month": "YYYY-MM", "year": "YYYY"}
#: What the usage report reads of a bucket: total and TOU energy, and the water total of water meters.
SERIES_COLUMNS = ("energy_kwh", *(f"energy_{r}_kwh" for r in RATES), "water_m3")
_ENERGY_COLUMNS = SERIES_COLUMNS[:5]


def _aggregate_sql(session: Session, meters: list[MeterInfo], f: ReportFilter, bucket: str, tz) -> Iterable[tuple]:
    """The same rows as :func:`_aggregate`, from the rollup tables on plain PostgreSQL.

    A meter-level report whose periods are the rollup's own buckets usually has one bucket per meter and
    period, so the buckets are the report rows (:func:`_series_rows`); if any period holds more than one
    bucket of a meter (only possible when buckets do not start a period in the report's time zone: property
    in another zone, zone changed) the grouped query (:func:`_grouped_sql`) runs instead, so the numbers are
    the same either way (tests/reports/test_usage_perf_shape.py).
    """
    if not meters:
        return []
    if _from_series(meters, f, bucket):
        rows = _series_rows(session, meters, f, bucket)
        if rows is not None:
            return rows
    return _grouped_sql(session, meters, f, bucket)


def _series_rows(session: Session, meters: list[MeterInfo], f: ReportFilter, bucket: str) -> Iterable[tuple] | None:
    """Meter-level rows straight from the usage series (a sum over one bucket is that bucket's value), or None
    when some meter has two buckets in one period (then only a grouped sum gives the right numbers).

    Values arrive as ``Decimal`` already (converted while the database streams, :func:`query.usage_series`);
    the period labels are formatted once per distinct bucket list (one for a fleet read every day), and each
    meter's rows are zipped together in C as they are consumed: no Python code runs per row, and a consumer
    that streams (API, export) never holds tens of thousands of row tuples for the garbage collector to walk.
    """
    if not meters:
        return []
    series = query.usage_series(session, [m.id for m in meters], f.start_at(), f.end_at(), bucket, SERIES_COLUMNS,
                                missing=ZERO)
    return _series_rows_of(meters, f, series) if f.level == "meter" else _series_sums_of(meters, f, series)


def _series_rows_of(meters: list[MeterInfo], f: ReportFilter, series: list[query.MeterSeries]
                    ) -> Iterator[tuple] | None:
    tz, granularity = f.tz, f.granularity
    labels: dict[int, list[str]] = {}
    for s in series:
        if id(s.buckets) not in labels:
            periods = [period_label(datetime.fromtimestamp(b, tz).date(), granularity) for b in s.buckets]
            if len(set(periods)) != len(periods):
                return None
            labels[id(s.buckets)] = periods
    by_meter = {s.meter_id: s for s in series}
    zeros = repeat(ZERO)

    def meter_rows(m: MeterInfo) -> Iterator[tuple]:
        s = by_meter[m.id]
        v = s.values
        amounts = ((v["water_m3"], zeros, zeros, zeros, zeros) if m.utility == "water"
                   else [v[c] for c in _ENERGY_COLUMNS])
        return zip(labels[id(s.buckets)], repeat(m.property), repeat(m.building), repeat(m.room),
                   repeat(m.name), repeat(m.utility), *amounts)

    return chain.from_iterable(map(meter_rows, [m for m in meters if m.id in by_meter]))


def _series_sums_of(meters: list[MeterInfo], f: ReportFilter, series: list[query.MeterSeries]
                    ) -> Iterator[tuple] | None:
    """Room (or any level's) rows: the series of each level object's meters added bucket by bucket (in C
    when the meters share their buckets, as a fleet read every day does), in the order of ``meters``; None when
    two buckets fall in one period (then only the grouped query gives the right numbers)."""
    by_meter = {s.meter_id: s for s in series}
    groups: dict[tuple, list[query.MeterSeries]] = {}
    labels: dict[tuple, tuple] = {}
    for m in meters:
        if m.id in by_meter:
            key = _group_key(m, f.level)
            groups.setdefault((key[0], m.utility), []).append(by_meter[m.id])
            labels.setdefault((key[0], m.utility), key[1:6])
    periods: dict[int, str] = {}
    for buckets in {id(s.buckets): s.buckets for s in series}.values():
        for b in buckets:
            if b not in periods:
                periods[b] = period_label(datetime.fromtimestamp(b, f.tz).date(), f.granularity)
    if len(set(periods.values())) != len(periods):
        return None
    zeros = repeat(ZERO)

    def level_rows(key: tuple) -> Iterator[tuple]:
        members = groups[key]
        buckets, sums = _added(members, SERIES_COLUMNS)
        amounts = ((sums["water_m3"], zeros, zeros, zeros, zeros) if key[1] == "water"
                   else [sums[c] for c in _ENERGY_COLUMNS])
        return zip([periods[b] for b in buckets], *(repeat(v) for v in labels[key]), *amounts)

    return chain.from_iterable(map(level_rows, list(groups)))


def _added(members: list[query.MeterSeries], columns: tuple[str, ...]) -> tuple[tuple[int, ...], dict[str, list]]:
    """The bucket-by-bucket sum of several meters' series: (buckets, values per column)."""
    first = members[0]
    if all(m.buckets is first.buckets for m in members):
        sums = {}
        for c in columns:
            acc = first.values[c]
            for other in members[1:]:
                acc = list(map(add, acc, other.values[c]))
            sums[c] = acc
        return first.buckets, sums
    merged: dict[int, dict[str, Decimal]] = {}
    for m in members:
        for i, b in enumerate(m.buckets):
            row = merged.setdefault(b, dict.fromkeys(columns, ZERO))
            for c in columns:
                row[c] += m.values[c][i]
    buckets = tuple(sorted(merged))
    return buckets, {c: [merged[b][c] for b in buckets] for c in columns}


def _grouped_sql(session: Session, meters: list[MeterInfo], f: ReportFilter, bucket: str) -> Iterator[tuple]:
    """Rows summed per level key and period by the database (GROUP BY), in the order of ``meters``."""
    if not meters:
        return
    labels: dict[tuple, tuple] = {}
    order: dict[tuple, int] = {}
    for m in meters:
        key = _group_key(m, f.level)
        labels.setdefault((key[0], m.utility), key[1:6])
        order.setdefault((key[0], m.utility), len(order))
    water = "CASE WHEN m.utility = 'water' THEN u.water_m3 ELSE u.energy_kwh END"
    rates = ", ".join(f"coalesce(sum(u.energy_{r}_kwh) FILTER (WHERE m.utility <> 'water'), 0)" for r in RATES)
    sql = (f"SELECT {_LEVEL_SQL[f.level]}, m.utility, to_char(date_trunc('{f.granularity}', u.bucket AT TIME ZONE "
           f"%(tz)s), '{_PERIOD_SQL[f.granularity]}'), coalesce(sum({water}), 0), {rates} "
           f"FROM {query.usage_relation(session, bucket)} u JOIN meters m ON m.id = u.meter_id "
           "LEFT JOIN rooms r ON r.id = m.room_id "
           "WHERE u.meter_id = ANY(%(ids)s) AND u.bucket >= %(start)s AND u.bucket < %(end)s GROUP BY 1, 2, 3")
    rows = _fetch(session, sql, f, meters)
    rows.sort(key=lambda r: (order[(r[0], r[1])], r[2]))
    for row in rows:
        yield (row[2], *labels[(row[0], row[1])], *row[3:])


def _fetch(session: Session, sql: str, f: ReportFilter, meters: list[MeterInfo]) -> list[tuple]:
    # The DB-API cursor of the session's own connection (same transaction, same RLS setting): plain tuples,
    # without a Row object per result row, which matters at tens of thousands of rows.
    cursor = session.connection().connection.cursor()
    try:
        cursor.execute(sql, {"tz": f.timezone, "ids": [m.id for m in meters], "start": f.start_at(),
                             "end": f.end_at()})
        return cursor.fetchall()
    finally:
        cursor.close()


def _aggregate(session: Session, meters: list[MeterInfo], f: ReportFilter, bucket: str, tz) -> Iterator[tuple]:
    by_id = {m.id: m for m in meters}
    sums: dict[tuple, dict[str, list[Decimal]]] = defaultdict(dict)
    for i in range(0, len(meters), CHUNK):
        ids = [m.id for m in meters[i:i + CHUNK]]
        for row in query.usage(session, ids, f.start_at(), f.end_at(), bucket):
            meter = by_id[row.meter_id]
            key = _group_key(meter, f.level)
            label = period_label(row.bucket.astimezone(tz).date(), f.granularity)
            acc = sums[key].setdefault(label, [ZERO] * 5)
            for j, value in enumerate(_amounts(row, meter.utility)):
                acc[j] += value
    for key in sorted(sums, key=lambda k: (k[1], k[2], k[3], k[4], k[0], k[5])):
        for label in sorted(sums[key]):
            yield (label, *key[1:6], *sums[key][label])


USAGE_COLUMNS = (
    Column("period", _l("Period")), Column("property", _l("Property")), Column("building", _l("Building")),
    Column("room", _l("Room")), Column("meter", _l("Meter")), Column("utility", _l("Utility")),
    Column("total", _l("Total (kWh / m³)"), "number"), Column("sharp", _l("Sharp kWh"), "number"),
    Column("peak", _l("Peak kWh"), "number"), Column("flat", _l("Flat kWh"), "number"),
    Column("valley", _l("Valley kWh"), "number"),
)


def _pct(part: Decimal, whole: Decimal) -> Decimal | None:
    return (part * 100 / whole).quantize(Decimal("0.01")) if whole else None


def _shift_month(d: date, months: int) -> date:
    index = d.year * 12 + d.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def monthly_rows(session: Session, f: ReportFilter) -> Iterator[tuple]:
    """One row per level object for the month of ``f.start``: usage, TOU split, shares, cost, MoM, YoY."""
    month = f.start.replace(day=1)
    window = ReportFilter(**{**f.__dict__, "start": _shift_month(month, -12), "end": _shift_month(month, 1),
                             "granularity": "month"})
    per: dict[tuple, dict[str, list[Decimal]]] = defaultdict(dict)
    for row in usage_rows(session, window):
        per[tuple(row[1:6])][row[0]] = list(row[6:])
    costs = _costs(session, f, month)
    this, prev, last_year = (period_label(m, "month") for m in (month, _shift_month(month, -1),
                                                                 _shift_month(month, -12)))
    for key, months in per.items():
        cur = months.get(this, [ZERO] * 5)
        before, year_ago = months.get(prev, [ZERO] * 5)[0], months.get(last_year, [ZERO] * 5)[0]
        mom = _pct(cur[0] - before, before)
        yoy = _pct(cur[0] - year_ago, year_ago)
        cost = costs.get(key)  # what the ledger charged; nothing booked is "not charged", never a 0
        yield (this, *key, *cur, _pct(cur[2] + cur[1], cur[0]), _pct(cur[4], cur[0]),
               str(_l("not charged")) if cost is None else cost, before, mom, year_ago, yoy)


def _costs(session: Session, f: ReportFilter, month: date) -> dict[tuple, Decimal]:
    """Charged money per level key in the month (from prepaid charges)."""
    meters = {m.id: m for m in selected_meters(session, f)}
    if not meters:
        return {}
    tz = f.tz
    rows = session.execute(text(
        "SELECT c.meter_id, sum(c.amount) FROM prepaid_charges c WHERE c.group_id = :g AND c.meter_id = ANY(:ids) "
        "AND c.interval_end > :start AND c.interval_end <= :end GROUP BY c.meter_id"),
        {"g": f.group_id, "ids": list(meters), "start": _at(month, tz), "end": _at(_shift_month(month, 1), tz)})
    out: dict[tuple, Decimal] = defaultdict(Decimal)
    for meter_id, amount in rows:
        out[tuple(_group_key(meters[meter_id], f.level)[1:6])] += amount or ZERO
    return out


def _at(d: date, tz):
    return datetime.combine(d, datetime.min.time(), tz)


MONTHLY_COLUMNS = USAGE_COLUMNS + (
    Column("peak_share", _l("Sharp+peak %"), "percent"), Column("valley_share", _l("Valley %"), "percent"),
    Column("cost", _l("Cost (CNY)"), "money"), Column("previous", _l("Previous month"), "number"),
    Column("mom", _l("Month on month %"), "percent"), Column("last_year", _l("Same month last year"), "number"),
    Column("yoy", _l("Year on year %"), "percent"),
)

REPORTS = [
    ReportDefinition("usage", _l("Energy and water usage"), "report.view", USAGE_COLUMNS, usage_rows,
                     _l("Daily, monthly or yearly usage per meter, room, building or property with the TOU split."),
                     chart=("period", ("total", "peak", "valley")), chart_split="utility",
                     filters=("period", "property", "building", "room", "meter", "level", "granularity", "utility")),
    ReportDefinition("monthly", _l("Comprehensive monthly report"), "report.view", MONTHLY_COLUMNS, monthly_rows,
                     _l("Usage, peak/valley split, cost, month-on-month and year-on-year for the month of the "
                        "start date."),
                     filters=("period", "property", "building", "room", "meter", "level", "utility")),
]
