"""Benchmark: charge 100,000 meters for one 30-minute interval, set-based, in shards (goal: a ratio to a floor).

    .venv/bin/python -m bench.bench_charging [--meters 100000] [--shards 1,2]

Builds a throwaway database (bench/common.py), loads N open prepaid accounts with one meter each, a
14-period TOU plan and two new readings per meter (each interval crosses a TOU boundary, so every meter
goes through the time split). Then charges one interval per run with ``charge_all`` — the first run with
the first ``--shards`` value (default 1: one transaction), the second run the next interval with the
second value (default 2 concurrent transactions + the sweep to revenue) — so single and sharded are
timed side by side on the same machine load. Each run starts after a VACUUM (ANALYZE) and a checkpoint, as
a run half an hour after the previous one would find the tables in production. Prints a table and merges the numbers into
bench/results.json under "charging" (``charge_s`` is the last run's).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import create_engine, text

from bench.common import print_table, ratio_goal, service_url, settle, throwaway_database, write_results

log = logging.getLogger("bench")
#: Goal: one charging run (readings → prices → charges → ledger → balances → control) within this many times a
#: plain set-based INSERT of its charge rows, measured in the same run (5 s for 100,000 meters when set).
RATIO_GOAL = 10.0
T0 = datetime(2026, 3, 2, 23, 45, tzinfo=UTC)  # 07:45 Shanghai; the first interval crosses 08:00 (flat → peak)
READINGS = (T0 + timedelta(minutes=30), T0 + timedelta(minutes=150))  # the second 09:45 → 10:15 (peak → sharp)
PERIODS = ((0, 360, "valley"), (360, 480, "flat"), (480, 600, "peak"), (600, 660, "sharp"), (660, 720, "peak"),
           (720, 840, "flat"), (840, 900, "peak"), (900, 960, "sharp"), (960, 1020, "peak"),
           (1020, 1140, "flat"), (1140, 1260, "peak"), (1260, 1320, "flat"), (1320, 1380, "valley"),
           (1380, 1440, "flat"))

LOAD = [
    "INSERT INTO groups (name, code, timezone, modules, created_at) VALUES ('Bench', 'bench', 'Asia/Shanghai', "
    "'{}', now())",
    "INSERT INTO properties (name, code, address, timezone, reading_interval_min, group_id, created_at) "
    "SELECT 'Bench mall', 'P1', '', 'Asia/Shanghai', 30, id, now() FROM groups WHERE code = 'bench'",
    "INSERT INTO gateways (property_id, name, host, port, framing, bus, enabled, status, fault_count, group_id, "
    "created_at) SELECT p.id, 'gw' || g, '127.0.0.1', 502, 'modbus-rtu-over-tcp', '{}', true, 'online', 0, p.group_id,"
    " now() FROM properties p, generate_series(1, 400) g",
    "INSERT INTO devices (property_id, gateway_id, driver_key, address, serial, config, status, fault_count, "
    "group_id, created_at) SELECT gw.property_id, gw.id, 'acrel_dtsd1352', a::text, gw.id || '-' || a, '{}', "
    "'online', 0, gw.group_id, now() FROM gateways gw, generate_series(1, :per_gateway) a",
    "INSERT INTO meters (property_id, device_id, channel, utility, name, status, keep_power, active, group_id, "
    "created_at, relay_desired, relay_closed) SELECT property_id, id, 1, 'electricity', '', 'online', false, true, "
    "group_id, now(), true, true FROM devices ORDER BY id LIMIT :n",
    "INSERT INTO ledger_accounts (group_id, property_id, kind, code, name, created_at) "
    "SELECT group_id, property_id, 'wallet', 'wallet:A' || id, 'A' || id, now() FROM meters",
    "INSERT INTO ledger_accounts (group_id, property_id, kind, code, name, created_at) "
    "SELECT group_id, id, 'cash_drawer', 'cash_drawer:' || id, 'drawer', now() FROM properties",
    "INSERT INTO prepaid_accounts (group_id, property_id, number, customer_name, phone, status, wallet_account_id, "
    "alarm1, alarm2, overdraft_limit, alarm_level, purchase_count, created_at, opened_at) "
    "SELECT m.group_id, m.property_id, 'A' || m.id, 'Customer ' || m.id, '', 'open', la.id, 20, 5, 0, 0, 1, now(), "
    "now() FROM meters m JOIN ledger_accounts la ON la.code = 'wallet:A' || m.id",
    "INSERT INTO ledger_transfers (group_id, kind, idempotency_key, request_hash, amount, channel, reason, actor, "
    "detail, created_at) SELECT id, 'topup', 'bench-opening', md5('bench'), 0, 'cash', 'opening balances', 'bench', "
    "'{}', now() FROM groups WHERE code = 'bench'",
    "INSERT INTO ledger_entries (group_id, transfer_id, account_id, amount, created_at) "
    "SELECT a.group_id, t.id, a.wallet_account_id, 500, now() FROM prepaid_accounts a, ledger_transfers t "
    "UNION ALL SELECT la.group_id, t.id, la.id, -500 * (SELECT count(*) FROM prepaid_accounts), now() "
    "FROM ledger_accounts la, ledger_transfers t WHERE la.kind = 'cash_drawer'",
    "INSERT INTO prepaid_meter_state (group_id, meter_id, account_id, property_id, utility, active, last_ts, "
    "last_total, cost_exact_total, charged_total, period_usage, bound_at) SELECT m.group_id, m.id, a.id, "
    "m.property_id, 'electricity', true, :t0, 1000 + m.id % 97, 0, 0, 0, now() FROM meters m "
    "JOIN prepaid_accounts a ON a.number = 'A' || m.id",
    "INSERT INTO readings (group_id, meter_id, ts, energy_kwh, quality, source) SELECT group_id, meter_id, :t1, "
    "last_total + round((random() * 3)::numeric, 2), 0, 'poll' FROM prepaid_meter_state",
    "INSERT INTO readings (group_id, meter_id, ts, energy_kwh, quality, source) SELECT group_id, meter_id, :t2, "
    "energy_kwh + round((random() * 3)::numeric, 2), 0, 'poll' FROM readings WHERE ts = :t1",
    "ANALYZE",
]


def load(admin_url: str, n: int) -> None:
    """Bulk-load the fixture with set-based SQL (admin role)."""
    engine = create_engine(admin_url)
    with engine.begin() as conn:
        for statement in LOAD:
            conn.execute(text(statement), {"n": n, "per_gateway": n // 400 + 1, "t0": T0, "t1": READINGS[0],
                                           "t2": READINGS[1]})
    engine.dispose()


def add_tariff(url: str) -> None:
    from meterhub.db import service_session
    from meterhub.tariffs import service as tariffs
    from meterhub.tariffs.pricing import PlanVersion

    prices = {"sharp": Decimal("1.20"), "peak": Decimal("0.90"), "flat": Decimal("0.60"), "valley": Decimal("0.30")}
    with service_session(url) as s:
        group_id, property_id = s.execute(text("SELECT group_id, id FROM properties")).one()
        tariff = tariffs.create_tariff(s, group_id, "Bench TOU")
        tariffs.add_version(s, tariff, T0 - timedelta(days=30), PlanVersion("tou", prices, PERIODS))
        tariffs.assign(s, group_id, "property", property_id, tariff)


def charge_rows_floor(admin_url: str, interval_end: datetime) -> float:
    """Seconds for one set-based INSERT of the last run's charge rows into a table like ``prepaid_charges``
    (same columns, keys and indexes): the floor the charging goal is a ratio to."""
    engine = create_engine(admin_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE bench_charges_floor (LIKE prepaid_charges INCLUDING ALL)"))
    settle(admin_url)
    with engine.begin() as conn:
        started = time.perf_counter()
        conn.execute(text("INSERT INTO bench_charges_floor SELECT * FROM prepaid_charges WHERE interval_end = :t"),
                     {"t": interval_end})
        elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def run(n: int, shards: tuple[int, int]) -> dict:
    from meterhub.db import dispose_service_engines, service_session
    from meterhub.ledger import check_ledger
    from meterhub.modules.prepaid.charging import charge_all

    with throwaway_database() as admin_url:
        started = time.perf_counter()
        load(admin_url, n)
        url = service_url(admin_url)
        add_tariff(url)
        load_s = time.perf_counter() - started
        runs = []
        for count, until in zip(shards, READINGS, strict=True):  # one interval per meter per run
            settle(admin_url)
            started = time.perf_counter()
            summary = charge_all(url, shards=count, until=until + timedelta(minutes=1))
            runs.append((count, time.perf_counter() - started, summary))
        settle(admin_url)
        started = time.perf_counter()
        again = charge_all(url, shards=shards[-1], until=READINGS[-1] + timedelta(minutes=1))
        rerun_s = time.perf_counter() - started
        insert_s = charge_rows_floor(admin_url, READINGS[-1])
        with service_session(url) as s:
            ok = check_ledger(s).ok
            charges, charged = s.execute(text("SELECT count(*), sum(amount) FROM prepaid_charges")).one()
            revenue = s.execute(text("SELECT sum(b.balance) FROM ledger_balances b JOIN ledger_accounts a "
                                     "ON a.id = b.account_id WHERE a.kind LIKE 'revenue%'")).scalar()
            clearing = s.execute(text("SELECT coalesce(sum(b.balance), 0) FROM ledger_balances b JOIN ledger_accounts "
                                      "a ON a.id = b.account_id WHERE a.kind = 'charge_clearing'")).scalar()
        dispose_service_engines()
    assert all(summary.intervals == n for _, _, summary in runs) and charges == 2 * n and again.intervals == 0
    assert ok and charged == revenue and clearing == 0, (ok, charged, revenue, clearing)
    count, charge_s, summary = runs[-1]
    result = {"meters": n, "intervals": summary.intervals, "amount_cny": str(summary.amount), "shards": count,
              "charge_s": round(charge_s, 3), "intervals_per_s": round(n / charge_s)}
    for other, seconds, _ in runs[:-1]:
        result[f"charge_s_{other}_shard{'s' if other > 1 else ''}_same_run"] = round(seconds, 3)
    ratio = charge_s / insert_s
    result.update({"rerun_nothing_new_s": round(rerun_s, 3), "load_s": round(load_s, 1), "ledger_consistent": ok,
                   "charges_equal_revenue": charged == revenue, "floor_insert_charge_rows_s": round(insert_s, 3),
                   "ratio_to_floor": round(ratio, 2), "goal_ratio": RATIO_GOAL, "goal_met": ratio <= RATIO_GOAL,
                   "steps_s": summary.timings, "load_average": os.getloadavg()[0]})
    for count, seconds, part in runs:
        log.info("%d shard(s): %.3f s, steps %s", count, seconds, part.timings)
    return result


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=100_000)
    parser.add_argument("--shards", default="1,2", help="shards of the first and the second run (default 1,2)")
    args = parser.parse_args()
    first, second = (int(x) for x in args.shards.split(","))
    result = run(args.meters, (first, second))
    print_table("charging: one interval for every meter (set-based SQL, sharded)", [result])
    print_table("Charging goal (ratio to a floor measured in this run)", [ratio_goal(
        "charging run / set-based INSERT of the same charge rows", result["ratio_to_floor"], f"<= {RATIO_GOAL}",
        f"{result['charge_s']} s for {result['meters']:,} meters (floor {result['floor_insert_charge_rows_s']} s)")])
    write_results("charging", result)


if __name__ == "__main__":
    main()
