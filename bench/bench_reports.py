"""Benchmark: daily usage report of 1,000 meters over 30 days (goal p95 ≤ 100 ms) and a 100,000-row xlsx
export in bounded memory (peak RSS reported).

    .venv/bin/python -m bench.bench_reports [--meters 1000] [--days 400] [--runs 30]

The store holds more than a year of data per meter, but the usage rollups (``usage_daily``,
``usage_monthly``, ``usage_hourly`` for the last 30 days) are generated directly with ``generate_series``:
producing 35 M raw 15-minute readings and rolling them up would take far longer than the report itself and
is measured by the time-series benchmarks. The report path is the production one: ``usage_rows`` over the
rollups API as the service role. The export runs in a child process (the same ``write_xlsx`` streaming path
as the rq job) so its peak RSS is its own. Prints a table and merges into bench/results.json ("reports").

The machine is shared: the daily report is timed alternating run by run with the previous meter-level path
(commit 55b7212) and the grouped query before it, ``query.usage`` with its previous implementation, all on the
same data after checking they return the same rows; the load average is printed and recorded next to them.
The load ends with ``VACUUM ANALYZE``, which autovacuum does to these insert-only tables in production.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from bench.common import print_table, service_url, throwaway_database, write_results

log = logging.getLogger("bench")
END = date(2026, 3, 1)
RSS_BOUND_MB = 300

LOAD = [
    "INSERT INTO groups (name, code, timezone, modules, created_at) VALUES ('Bench', 'bench', 'Asia/Shanghai', "
    "'{}', now())",
    "INSERT INTO properties (name, code, address, timezone, reading_interval_min, group_id, created_at) "
    "SELECT 'Bench mall', 'P1', '', 'Asia/Shanghai', 15, id, now() FROM groups WHERE code = 'bench'",
    "INSERT INTO buildings (property_id, name, group_id) SELECT id, 'B' || b, group_id FROM properties, "
    "generate_series(1, 10) b",
    "INSERT INTO floors (property_id, building_id, level, name, group_id) SELECT property_id, id, 1, '1F', group_id "
    "FROM buildings",
    "INSERT INTO rooms (property_id, building_id, floor_id, number, name, kind, area_m2, group_id) "
    "SELECT f.property_id, f.building_id, f.id, lpad(r::text, 3, '0'), '', 'shop', 30, f.group_id "
    "FROM floors f, generate_series(1, :meters / 10) r",
    "INSERT INTO gateways (property_id, name, host, port, framing, bus, enabled, status, fault_count, group_id, "
    "created_at) SELECT p.id, 'gw' || g, '127.0.0.1', 502, 'modbus-rtu-over-tcp', '{}', true, 'online', 0, "
    "p.group_id, now() FROM properties p, generate_series(1, 40) g",
    "INSERT INTO devices (property_id, gateway_id, driver_key, address, serial, config, status, fault_count, "
    "group_id, created_at) SELECT r.property_id, (SELECT min(id) FROM gateways) + (r.id % 40), 'acrel_dtsd1352', "
    "r.id::text, 'S' || r.id, '{}', 'online', 0, r.group_id, now() FROM rooms r",
    "INSERT INTO meters (property_id, device_id, room_id, channel, utility, name, status, keep_power, active, "
    "group_id, created_at) SELECT d.property_id, d.id, d.address::bigint, 1, 'electricity', 'M' || d.id, 'online', "
    "false, true, d.group_id, now() FROM devices d",
    # day buckets at local midnight (Asia/Shanghai); TOU split sums to the total
    "INSERT INTO usage_daily (group_id, meter_id, bucket, energy_kwh, energy_sharp_kwh, energy_peak_kwh, "
    "energy_flat_kwh, energy_valley_kwh, readings, resets) SELECT m.group_id, m.id, "
    "(CAST(:end AS date) - d)::timestamp AT TIME ZONE 'Asia/Shanghai', 40 + (m.id % 7), 4, 12, 14 + (m.id % 7), "
    "10, 96, 0 FROM meters m, generate_series(1, :days) d",
    "INSERT INTO usage_monthly (group_id, meter_id, bucket, energy_kwh, energy_sharp_kwh, energy_peak_kwh, "
    "energy_flat_kwh, energy_valley_kwh, readings, resets) SELECT group_id, meter_id, "
    "date_trunc('month', bucket AT TIME ZONE 'Asia/Shanghai') AT TIME ZONE 'Asia/Shanghai', sum(energy_kwh), "
    "sum(energy_sharp_kwh), sum(energy_peak_kwh), sum(energy_flat_kwh), sum(energy_valley_kwh), sum(readings), 0 "
    "FROM usage_daily GROUP BY 1, 2, 3",
    "INSERT INTO usage_hourly (group_id, meter_id, bucket, energy_kwh, readings, resets) SELECT m.group_id, m.id, "
    "CAST(:end AS date)::timestamp AT TIME ZONE 'Asia/Shanghai' - h * interval '1 hour', 1.7, 4, 0 "
    "FROM meters m, generate_series(1, 720) h",
]


def load(admin_url: str, meters: int, days: int) -> float:
    """Create the fleet and its rollups; returns seconds taken."""
    started = time.perf_counter()
    engine = create_engine(admin_url)
    with engine.begin() as conn:
        for sql in LOAD:
            conn.execute(text(sql), {"meters": meters, "days": days, "end": END})
    # What autovacuum does to these insert-only tables in production: statistics and the visibility map (so
    # range scans over the rollups' covering keys are index-only).
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return time.perf_counter() - started


def _filter(session: Session, **kw):
    from meterhub.reports.filters import ReportFilter

    group_id = session.execute(text("SELECT id FROM groups WHERE code = 'bench'")).scalar_one()
    return ReportFilter(group_id=group_id, **kw)


def previous_meter_rows(session: Session, f) -> list[tuple]:
    """Baseline: the meter-level daily report as it was before issue 7 (commit 55b7212), for the side-by-side
    timing: one result row per meter and day with a LATERAL period label, converted row by row by psycopg2,
    then reshaped in Python. Only the case the bench times (one bucket per meter and period)."""
    from itertools import groupby
    from operator import itemgetter

    from meterhub.reports.filters import selected_meters
    from meterhub.reports.usage import _PERIOD_SQL, RATES, _fetch

    meters = selected_meters(session, f)
    period = f"date_trunc('{f.granularity}', u.bucket AT TIME ZONE %(tz)s)"
    water = "m.utility = 'water'"
    rates = ", ".join(f"CASE WHEN {water} THEN 0 ELSE coalesce(u.energy_{r}_kwh, 0) END" for r in RATES)
    sql = (f"SELECT u.meter_id, p.label, p.aligned, "
           f"coalesce(CASE WHEN {water} THEN u.water_m3 ELSE u.energy_kwh END, 0), {rates} "
           f"FROM usage_daily u JOIN meters m ON m.id = u.meter_id "
           f"CROSS JOIN LATERAL (SELECT to_char({period}, '{_PERIOD_SQL[f.granularity]}') AS label, "
           f"u.bucket = {period} AT TIME ZONE %(tz)s AS aligned OFFSET 0) p "
           "WHERE u.meter_id = ANY(%(ids)s) AND u.bucket >= %(start)s AND u.bucket < %(end)s "
           "ORDER BY u.meter_id, u.bucket")
    rows = _fetch(session, sql, f, meters)
    if not all(map(itemgetter(2), rows)) and len(set(map(itemgetter(0, 1), rows))) != len(rows):
        raise SystemExit("the previous path would have fallen back to the grouped query")
    by_meter = {meter_id: list(group) for meter_id, group in groupby(rows, itemgetter(0))}
    out = []
    for m in meters:
        label = (m.property, m.building, m.room, m.name, m.utility)
        for row in by_meter.pop(m.id, ()):
            out.append((row[1], *label, *row[3:]))
    return out


@dataclass(frozen=True)
class PreviousUsageRow:
    """Baseline: ``query.UsageRow`` as it was before issue 7 (a frozen dataclass)."""

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


def previous_usage(session: Session, meter_ids: list[int], start: datetime, end: datetime,
                   bucket: str) -> list[PreviousUsageRow]:
    """Baseline: ``query.usage`` on plain PostgreSQL as it was before issue 7 (one row per bucket through
    SQLAlchemy, one frozen dataclass per row)."""
    from sqlalchemy import bindparam

    from meterhub.timeseries.columns import COUNTERS
    from meterhub.timeseries.query import BUCKETS

    cols = ", ".join(f"u.{c}" for c in COUNTERS)
    stmt = text(
        f"SELECT u.meter_id, u.bucket, {cols}, u.readings, u.resets FROM {BUCKETS[bucket]} u "
        f"JOIN meters m ON m.id = u.meter_id "
        f"WHERE u.meter_id IN :ids AND u.bucket >= :start AND u.bucket < :end ORDER BY u.meter_id, u.bucket"
    ).bindparams(bindparam("ids", expanding=True))
    rows = session.execute(stmt, {"ids": list(meter_ids), "start": start, "end": end})
    return [PreviousUsageRow(*row) for row in rows]


def _consume(rows) -> int:
    """Go through every row once, as the API and the export do, and count them."""
    count = 0
    for _ in rows:
        count += 1
    return count


def _timed(engine, runs: int, cases: dict, f_kw: dict, same=lambda a, b: a == b) -> dict:
    """p50/p95/max per case over ``runs`` runs, the cases alternating run by run so they see the same machine
    load; every case's result is first checked equal to the first case's."""
    timings: dict[str, list[float]] = {name: [] for name in cases}
    rows: dict[str, int] = {}
    with Session(engine) as session:
        f = _filter(session, **f_kw)
        warm = {name: list(run(session, f)) for name, run in cases.items()}  # warm-up
        first = next(iter(warm))
        for name, result in warm.items():
            if not same(result, warm[first]):
                raise SystemExit(f"{name} differs from {first}")
        for _ in range(runs):
            for name, run in cases.items():
                started = time.perf_counter()
                rows[name] = _consume(run(session, f))
                timings[name].append((time.perf_counter() - started) * 1000)
    out = {}
    for name, values in timings.items():
        values.sort()
        out[name] = {"rows": rows[name], "p50_ms": statistics.median(values),
                     "p95_ms": values[max(0, -(-len(values) * 95 // 100) - 1)], "max_ms": values[-1]}
    return out


def time_usage_api(url: str, runs: int, days: int = 30) -> dict:
    """``query.usage`` (the portal chart's and REST API's query) for every meter over ``days`` daily buckets:
    now vs before issue 7, alternated; the rows are checked equal field by field (values and their scale)."""
    from meterhub.reports.filters import selected_meters
    from meterhub.timeseries import query

    def ids(session: Session, f) -> list[int]:
        return [m.id for m in selected_meters(session, f)]

    cases = {
        "now": lambda session, f: query.usage(session, ids(session, f), f.start_at(), f.end_at(), "day"),
        "before": lambda session, f: previous_usage(session, ids(session, f), f.start_at(), f.end_at(), "day"),
    }

    def fields(rows: list) -> list[tuple]:
        return [tuple(repr(getattr(r, k)) for k in query.UsageRow._fields) for r in rows]

    def same(a: list, b: list) -> bool:
        return fields(a) == fields(b)

    engine = create_engine(url)
    try:
        return _timed(engine, runs, cases, {"start": END - timedelta(days=days), "end": END}, same)
    finally:
        engine.dispose()


def _query_only(session: Session, f) -> list:
    """The report's database part alone: the meters, then the rollup query with every value converted to a
    ``Decimal`` (``query.usage_series``), without making report rows."""
    from meterhub.reports.filters import selected_meters
    from meterhub.reports.usage import SERIES_COLUMNS, ZERO
    from meterhub.timeseries import query

    meters = selected_meters(session, f)
    return query.usage_series(session, [m.id for m in meters], f.start_at(), f.end_at(), "day", SERIES_COLUMNS,
                              missing=ZERO)


def time_report(url: str, runs: int, baseline: bool = False, grouped: bool = False, **kw) -> dict:
    """p50/p95 of one report run (every row produced and consumed once, as the API and the export consume
    them) over ``runs`` runs.

    With ``grouped``, the same rows summed by the database (:func:`usage._grouped_sql`) are timed alternated
    (the room, building and property reports' path before the series sums). With ``baseline``, the same rows
    through the previous meter-level path (:func:`previous_meter_rows`) and
    through the grouped query alone (:func:`usage._grouped_sql`, the path before that) are timed too,
    alternating with the report run by run so all see the same machine load; the rows are checked to be
    equal (values and their types) first. Returns ``{"report": ..., "previous": ..., "baseline": ...}``.
    """
    from meterhub.reports.filters import selected_meters
    from meterhub.reports.usage import _grouped_sql, usage_rows
    from meterhub.timeseries import query

    def grouped_rows(session: Session, f) -> list:
        bucket = "day" if f.granularity == "day" else "month"
        return list(_grouped_sql(session, selected_meters(session, f), f, bucket))

    def same(a: list, b: list) -> bool:
        if a and isinstance(a[0], query.MeterSeries) or b and isinstance(b[0], query.MeterSeries):
            return True  # the query alone gives series, not report rows: nothing to compare row by row
        return a == b and [tuple(map(type, r)) for r in a] == [tuple(map(type, r)) for r in b]

    cases = {"report": usage_rows}
    if grouped:
        cases["grouped"] = grouped_rows
    if baseline:
        cases["materialised"] = lambda session, f: list(usage_rows(session, f))
        cases["query"] = _query_only
        cases["previous"] = previous_meter_rows
        cases["baseline"] = grouped_rows
    engine = create_engine(url)
    try:
        return _timed(engine, runs, cases, kw, same)
    finally:
        engine.dispose()


def export_child(url: str, path: str, days: int) -> None:
    """In a child process: stream the meter-level daily usage of ``days`` days into ``path``; print JSON."""
    from meterhub.reports.usage import USAGE_COLUMNS, usage_rows
    from meterhub.reports.xlsx import write_xlsx

    engine = create_engine(url)
    started = time.perf_counter()
    with Session(engine) as session:
        f = _filter(session, start=END - timedelta(days=days), end=END)
        count = write_xlsx(path, "usage", [str(c.key) for c in USAGE_COLUMNS], usage_rows(session, f),
                           [c.kind for c in USAGE_COLUMNS])
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": count, "seconds": seconds, "peak_rss_mb": peak_mb,
                      "size_mb": Path(path).stat().st_size / 2**20}))


def _load(values: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--days", type=int, default=400, help="days of rollups per meter (≥ 365)")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--export-rows", type=int, default=100_000)
    parser.add_argument("--child", nargs=3, metavar=("URL", "PATH", "DAYS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.child:
        export_child(args.child[0], args.child[1], int(args.child[2]))
        return
    with throwaway_database() as admin_url:
        from meterhub.timeseries.timescale import timescale_installed

        engine = create_engine(admin_url)
        with engine.connect() as conn:
            on_timescale = timescale_installed(conn)
        engine.dispose()
        if on_timescale:  # this bench writes rollup rows; TimescaleDB reads the aggregates (bench_timescale)
            log.info("bench_reports times the rollup tables of plain PostgreSQL; on TimescaleDB the daily report "
                     "from the aggregates vs the rollups is in bench_timescale")
            return
        loaded = load(admin_url, args.meters, args.days)
        url = service_url(admin_url)
        start = END - timedelta(days=30)
        load_before = os.getloadavg()
        daily_runs = time_report(url, args.runs, baseline=True, start=start, end=END)
        daily, daily_previous, daily_before = daily_runs["report"], daily_runs["previous"], daily_runs["baseline"]
        daily_list, daily_query = daily_runs["materialised"], daily_runs["query"]
        api = time_usage_api(url, args.runs)
        load_after = os.getloadavg()
        rooms = time_report(url, args.runs, grouped=True, start=start, end=END, level="room")
        buildings = time_report(url, args.runs, grouped=True, start=start, end=END, level="building")
        monthly = time_report(url, max(5, args.runs // 3), start=END - timedelta(days=365), end=END,
                              level="property", granularity="month")["report"]
        days = -(-args.export_rows // args.meters)
        out = Path("/tmp") / f"meterhub-bench-export-{time.time_ns()}.xlsx"
        child = subprocess.run([sys.executable, "-m", "bench.bench_reports", "--child", url, str(out), str(days)],
                               capture_output=True, text=True, check=True)
        export = json.loads(child.stdout.strip().splitlines()[-1])
        out.unlink(missing_ok=True)
    table = [
        {"case": f"daily per meter, {args.meters} meters x 30 days", **daily},
        {"case": "  same report, kept in one list (alternated)", **daily_list},
        {"case": "  its query alone: meters + rollups, values as Decimal", **daily_query},
        {"case": "  same rows, previous path (55b7212; alternated)", **daily_previous},
        {"case": "  same rows, grouped query (before that; alternated)", **daily_before},
        {"case": f"query.usage, {args.meters} meters x 30 daily buckets", **api["now"]},
        {"case": "  same rows, previous query.usage (alternated)", **api["before"]},
        {"case": "daily per room (1 meter each), 30 days", **rooms["report"]},
        {"case": "  same rows, summed by the database (alternated)", **rooms["grouped"]},
        {"case": "daily per building (100 meters each), 30 days", **buildings["report"]},
        {"case": "  same rows, summed by the database (alternated)", **buildings["grouped"]},
        {"case": "monthly per property, 12 months", **monthly},
    ]
    load_note = f"load average (1/5/15 min) {_load(load_before)} before, {_load(load_after)} after; {os.cpu_count()} CPUs"
    print_table(f"Usage reports (service role, rollups API); {load_note}", table)
    print_table("xlsx export (write-only, streamed, child process)", [{
        "rows": export["rows"], "seconds": export["seconds"], "rows_per_s": export["rows"] / export["seconds"],
        "peak_rss_mb": export["peak_rss_mb"], "bound_mb": RSS_BOUND_MB, "file_mb": export["size_mb"]}])
    write_results("reports", {
        "load_average": {"before": list(load_before), "after": list(load_after)},
        "data": {"meters": args.meters, "days_of_rollups": args.days, "load_seconds": round(loaded, 1),
                 "note": "rollups generated directly (no raw readings)"},
        "daily_report": {**daily, "goal_p95_ms": 100, "met": daily["p95_ms"] <= 100,
                         "kept_in_one_list": daily_list, "query_alone": daily_query,
                         "previous_path": daily_previous,
                         "grouped_query_before": daily_before},
        "usage_api_daily": {**api["now"], "before": api["before"]},
        "room_report": {**rooms["report"], "grouped_query": rooms["grouped"]},
        "building_report": {**buildings["report"], "grouped_query": buildings["grouped"]},
        "monthly_property_report": monthly,
        "xlsx_export": {**export, "bound_mb": RSS_BOUND_MB, "met": export["peak_rss_mb"] <= RSS_BOUND_MB},
    })


if __name__ == "__main__":
    main()
