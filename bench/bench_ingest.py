"""Ingest benchmark: our batched COPY ingest vs a plain COPY of the same rows into an identical table.

    python -m bench.bench_ingest [--meters 1000] [--per-meter 200] [--batch 20000]

Runs against a throwaway database on the local server (``METERHUB_DATABASE_URL`` admin URL, default
``postgresql://postgres@127.0.0.1:5432/postgres``), prints a table and merges results into ``bench/results.json``.
Both sides encode the same ``Reading`` objects with the same encoder. A batch of new readings is copied
straight into ``readings`` under a savepoint; the general path (staging + ``INSERT … ON CONFLICT``), which a
batch repeating a stored reading takes, is timed on its own, and the re-ingest of every row is the all-duplicates
case.
"""

from __future__ import annotations

import argparse
import io
import logging
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import create_engine, text

from meterhub.timeseries import ingest as ingest_mod
from meterhub.timeseries.ingest import COLUMNS, Reading, encode_batch, ingest

from .common import print_table, ratio_goal, service_url, settle, throwaway_database, write_results

log = logging.getLogger("bench.ingest")
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def make_fleet(admin_url: str, meters: int) -> tuple[int, list[int]]:
    """One group, property, gateway; ``meters`` single-channel devices. Returns (group_id, meter ids)."""
    engine = create_engine(admin_url)
    with engine.begin() as conn:
        group = conn.execute(text("INSERT INTO groups (name, code, timezone, modules, created_at) "
                                  "VALUES ('Bench', 'bench', 'Asia/Shanghai', '{}', now()) RETURNING id")).scalar()
        prop = conn.execute(text(
            "INSERT INTO properties (group_id, name, code, address, timezone, reading_interval_min, created_at) "
            "VALUES (:g, 'Bench', 'B', '', 'Asia/Shanghai', 30, now()) RETURNING id"), {"g": group}).scalar()
        gateway = conn.execute(text(
            "INSERT INTO gateways (group_id, property_id, name, host, port, framing, bus, enabled, status, "
            "fault_count, created_at) VALUES (:g, :p, 'gw', '', 502, 'mqtt', '{}', true, 'unknown', 0, now()) "
            "RETURNING id"), {"g": group, "p": prop}).scalar()
        meter_ids = []
        for i in range(meters):
            device = conn.execute(text(
                "INSERT INTO devices (group_id, property_id, gateway_id, driver_key, address, serial, config, "
                "status, fault_count, created_at) VALUES (:g, :p, :gw, 'bench', :a, :a, '{}', 'unknown', 0, now()) "
                "RETURNING id"), {"g": group, "p": prop, "gw": gateway, "a": str(i + 1)}).scalar()
            meter_ids.append(conn.execute(text(
                "INSERT INTO meters (group_id, property_id, device_id, channel, utility, name, status, keep_power, "
                "active, created_at) VALUES (:g, :p, :d, 1, 'electricity', '', 'unknown', false, true, now()) "
                "RETURNING id"), {"g": group, "p": prop, "d": device}).scalar())
    engine.dispose()
    return group, meter_ids


def make_readings(group: int, meter_ids: list[int], per_meter: int, offset: int) -> list[Reading]:
    """Typical 30-minute readings: energy total and 4 TOU rates, power, three voltages."""
    out = []
    for step in range(offset, offset + per_meter):
        ts = T0 + timedelta(minutes=30 * step)
        base = Decimal(step) / 4
        for meter in meter_ids:
            out.append(Reading(group, meter, ts, {
                "energy_kwh": base * 4, "energy_sharp_kwh": base, "energy_peak_kwh": base, "energy_flat_kwh": base,
                "energy_valley_kwh": base, "power_kw": Decimal("1.234"), "voltage_a_v": Decimal("229.8"),
                "voltage_b_v": Decimal("230.1"), "voltage_c_v": Decimal("231.0")}))
    return out


def raw_copy(admin_url: str, rows: list[Reading], batch: int) -> float:
    """Seconds to encode and COPY ``rows`` into ``readings_raw`` (same columns, keys, indexes, meter check)."""
    engine = create_engine(admin_url)
    raw = engine.raw_connection()
    start = time.perf_counter()
    with raw.cursor() as cur:
        for i in range(0, len(rows), batch):
            buffer = io.StringIO(encode_batch(rows[i:i + batch]).text)
            cur.copy_expert(f"COPY readings_raw ({', '.join(COLUMNS)}) FROM STDIN", buffer)
            raw.commit()
    elapsed = time.perf_counter() - start
    raw.close()
    engine.dispose()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--per-meter", type=int, default=200)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2, help="batches in flight at once (ingest's default: 2)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with throwaway_database() as admin_url:
        group, meter_ids = make_fleet(admin_url, args.meters)
        with create_engine(admin_url).begin() as conn:
            conn.execute(text("CREATE TABLE readings_raw (LIKE readings INCLUDING ALL)"))
            # The same meter check as ``readings`` (migration 0012: once per statement, not per row).
            conn.execute(text("CREATE TRIGGER readings_raw_meter_check AFTER INSERT ON readings_raw "
                              "REFERENCING NEW TABLE AS new_readings FOR EACH STATEMENT "
                              "EXECUTE FUNCTION meterhub_readings_meter_check()"))
        engine = create_engine(service_url(admin_url), pool_size=max(2, args.workers))
        ingest(make_readings(group, meter_ids[:10], 2, 10_000), engine=engine, notify=False, fresh=False)  # warm-up
        rows = make_readings(group, meter_ids, args.per_meter, 0)
        n = len(rows)
        settle(admin_url)
        raw_s = raw_copy(admin_url, rows, args.batch)
        settle(admin_url)
        start = time.perf_counter()
        result = ingest(rows, engine=engine, batch_size=args.batch, notify=False, workers=args.workers,
                        fresh=False)
        ours_s = time.perf_counter() - start
        settle(admin_url)
        start = time.perf_counter()
        again = ingest(rows, engine=engine, batch_size=args.batch, notify=False, workers=args.workers,
                        fresh=False)
        dup_s = time.perf_counter() - start
        # New rows through the general path (staging + INSERT … ON CONFLICT), which a batch takes when it
        # repeats a stored reading or names an unknown meter.
        later = make_readings(group, meter_ids, args.per_meter, args.per_meter)
        append, ingest_mod._append = ingest_mod._append, lambda cursor, batch: False
        try:
            settle(admin_url)
            start = time.perf_counter()
            general = ingest(later, engine=engine, batch_size=args.batch, notify=False, workers=args.workers,
                        fresh=False)
            general_s = time.perf_counter() - start
        finally:
            ingest_mod._append = append
        start = time.perf_counter()
        encode_batch(rows)
        encode_s = time.perf_counter() - start
        engine.dispose()
    assert result.stored == n and again.duplicates == n and general.stored == n, (result, again, general)
    table = [
        {"path": "plain COPY (encode + COPY, identical table)", "rows": n, "seconds": raw_s, "rows_per_s": n / raw_s},
        {"path": "meterhub ingest (COPY + meter check + latest)", "rows": n, "seconds": ours_s,
         "rows_per_s": n / ours_s},
        {"path": "  general path (staging + INSERT…ON CONFLICT + latest)", "rows": n, "seconds": general_s,
         "rows_per_s": n / general_s},
        {"path": "meterhub re-ingest (all duplicates)", "rows": n, "seconds": dup_s, "rows_per_s": n / dup_s},
        {"path": "encoding only (Python)", "rows": n, "seconds": encode_s, "rows_per_s": n / encode_s},
    ]
    print_table(f"Ingest, {args.meters} meters x {args.per_meter} readings, batch {args.batch}, "
                f"{args.workers} batches in flight", table)
    ratio = raw_s / ours_s
    # The goal is the ratio to plain COPY in the same run (any machine); the readings/s are printed beside it.
    goal = ratio_goal("ingest throughput / plain COPY, same rows, same run", ratio, ">= 0.8",
                      f"{n / ours_s:,.0f} readings/s (plain COPY {n / raw_s:,.0f}/s)")
    print_table("Ingest goal (ratio to a floor measured in this run)", [goal])
    write_results("ingest", {
        "rows": n, "meters": args.meters, "batch": args.batch, "workers": args.workers,
        "plain_copy_rows_per_s": round(n / raw_s), "ingest_rows_per_s": round(n / ours_s),
        "reingest_rows_per_s": round(n / dup_s), "general_path_rows_per_s": round(n / general_s), "encode_rows_per_s": round(n / encode_s),
        "ratio_vs_plain_copy": round(ratio, 3), "goals": {"ratio_vs_plain_copy": 0.8},
        "goal_met": goal["met"] == "met",
    })


if __name__ == "__main__":
    main()
