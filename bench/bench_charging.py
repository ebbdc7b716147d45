"""Benchmark: charge 100,000 meters for one 30-minute interval (goal ≤ 5 s), set-based.

    .venv/bin/python -m bench.bench_charging [--meters 100000]

Builds a throwaway database (bench/common.py), loads N open prepaid accounts with one meter each, a
14-period TOU plan and one new reading per meter (the interval crosses a TOU boundary, so every meter
goes through the time split), then times ``charge_new_intervals`` in one transaction. Prints a table and
merges the numbers into bench/results.json under "charging".
"""

from __future__ import annotations

import argparse
import logging
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import create_engine, text

from bench.common import print_table, service_url, throwaway_database, write_results

log = logging.getLogger("bench")
T0 = datetime(2026, 3, 2, 23, 45, tzinfo=UTC)  # 07:45 Shanghai; the interval crosses 08:00 (flat → peak)
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
    "ANALYZE",
]


def load(admin_url: str, n: int) -> None:
    """Bulk-load the fixture with set-based SQL (admin role)."""
    engine = create_engine(admin_url)
    with engine.begin() as conn:
        for statement in LOAD:
            conn.execute(text(statement), {"n": n, "per_gateway": n // 400 + 1, "t0": T0,
                                           "t1": T0 + timedelta(minutes=30)})
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


def run(n: int) -> dict:
    from meterhub.db import dispose_service_engines, service_session
    from meterhub.ledger import check_ledger
    from meterhub.modules.prepaid.charging import charge_new_intervals

    with throwaway_database() as admin_url:
        started = time.perf_counter()
        load(admin_url, n)
        url = service_url(admin_url)
        add_tariff(url)
        load_s = time.perf_counter() - started
        until = T0 + timedelta(hours=1)
        started = time.perf_counter()
        with service_session(url) as s:
            summary = charge_new_intervals(s, until=until)
        charge_s = time.perf_counter() - started
        started = time.perf_counter()
        with service_session(url) as s:
            again = charge_new_intervals(s, until=until)
        rerun_s = time.perf_counter() - started
        with service_session(url) as s:
            ok = check_ledger(s).ok
            charges = s.execute(text("SELECT count(*) FROM prepaid_charges")).scalar()
        dispose_service_engines()
    assert summary.intervals == n == charges and again.intervals == 0 and ok
    return {"meters": n, "intervals": summary.intervals, "amount_cny": str(summary.amount),
            "charge_s": round(charge_s, 3), "intervals_per_s": round(n / charge_s), "rerun_nothing_new_s":
            round(rerun_s, 3), "load_s": round(load_s, 1), "ledger_consistent": ok, "goal_s": 5.0,
            "goal_met": charge_s <= 5.0, "steps_s": summary.timings}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=100_000)
    args = parser.parse_args()
    result = run(args.meters)
    print_table("charging: one interval for every meter (set-based SQL)", [result])
    write_results("charging", result)


if __name__ == "__main__":
    main()
