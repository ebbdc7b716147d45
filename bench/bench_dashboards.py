"""Console pages over a large group: the dashboards and the live room monitor (issue 16 items 3, 6; issue 19 item 5).

A throwaway database gets one group with ``--rooms`` rooms in two properties and ``--meters-per-room`` meters per
room (default 10,000 rooms, 100,000 meters), an open prepaid account per room with a top-up, stored days-left
forecasts, ``--history-days`` days of daily usage per meter, the per-property rollups, alarms and commands — written
set-based in SQL as the admin role. The pages are then asked for by a signed-in group admin through the app (its
own database role, RLS), ``--runs`` times each after a warm-up; server time p50/p95 next to a trivial page of the
same app (the sign-in form: the framework's floor). Each answer must be 200 with the page's content. The
background jobs these pages read from (per-property usage rollup, days-left forecasts) are timed once each.

    .venv/bin/python -m bench.bench_dashboards [--rooms 10000] [--meters-per-room 10] [--runs 30]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import time
import uuid
from typing import Any

from sqlalchemy import create_engine, text

from bench.common import BENCH_INSTANCE, print_table, settle, throwaway_database, write_results

log = logging.getLogger("bench")
GOALS_MS = {"room_monitor": 150, "dashboard_group": 200, "dashboard_property": 200}

SEED_SQL = [
    # buildings (10 per property), floors (20 per building), rooms spread evenly
    """INSERT INTO buildings (group_id, property_id, name)
       SELECT :g, p.id, 'Block ' || chr(64 + b) FROM properties p, generate_series(1, 10) b WHERE p.group_id = :g""",
    """INSERT INTO floors (group_id, property_id, building_id, level, name)
       SELECT :g, bl.property_id, bl.id, f, f || 'F' FROM buildings bl, generate_series(1, 20) f WHERE bl.group_id = :g""",
    """INSERT INTO rooms (group_id, property_id, building_id, floor_id, number, name, kind, area_m2)
       SELECT :g, x.property_id, x.building_id, x.id, x.level || lpad(r::text, 2, '0'), '', 'shop', 30
       FROM (SELECT f.*, row_number() OVER (ORDER BY f.id) AS n FROM floors f WHERE f.group_id = :g) x,
            generate_series(1, CAST(:per_floor AS int)) r""",
    """INSERT INTO gateways (group_id, property_id, name, host, port, framing, bus, enabled, status, fault_count,
                             created_at)
       SELECT :g, bl.property_id, 'GW ' || bl.name || '-' || bl.id, '10.0.0.1', 502, 'modbus-rtu-over-tcp', '{}', true,
              CASE WHEN bl.id % 7 = 0 THEN 'offline' ELSE 'online' END, 0, now()
       FROM buildings bl WHERE bl.group_id = :g""",
    """INSERT INTO devices (group_id, property_id, gateway_id, driver_key, address, serial, config, status, fault_count,
                            created_at)
       SELECT :g, r.property_id, gw.id, 'acrel_adf300', r.id::text, 'B' || r.id, '{}', 'online', 0, now()
       FROM rooms r JOIN buildings bl ON bl.id = r.building_id
       JOIN gateways gw ON gw.property_id = bl.property_id AND gw.name = 'GW ' || bl.name || '-' || bl.id
       WHERE r.group_id = :g""",
    """INSERT INTO meters (group_id, property_id, device_id, room_id, channel, utility, name, status, keep_power,
                           active, created_at, relay_closed)
       SELECT :g, d.property_id, d.id, r.id, c, CASE WHEN c = 1 THEN 'water' ELSE 'electricity' END, 'Ch ' || c,
              CASE WHEN (r.id + c) % 97 = 0 THEN 'offline' ELSE 'online' END, false, true, now(), true
       FROM devices d JOIN rooms r ON 'B' || r.id = d.serial, generate_series(1, CAST(:mpr AS int)) c
       WHERE d.group_id = :g""",
    """INSERT INTO ledger_accounts (group_id, property_id, kind, code, name, created_at)
       SELECT :g, r.property_id, 'wallet', 'wallet:R' || r.id, 'Tenant ' || r.id, now() FROM rooms r WHERE r.group_id = :g""",
    """INSERT INTO ledger_accounts (group_id, property_id, kind, code, name, created_at)
       SELECT :g, p.id, 'cash_drawer', 'cash:' || p.id, 'Cash', now() FROM properties p WHERE p.group_id = :g""",
    """INSERT INTO prepaid_accounts (group_id, property_id, room_id, number, customer_name, phone, status,
                                     wallet_account_id, alarm1, alarm2, overdraft_limit, alarm_level, purchase_count,
                                     created_at, opened_at)
       SELECT :g, r.property_id, r.id, 'R' || r.id, 'Tenant ' || r.id, '139' || lpad(r.id::text, 8, '0'), 'open',
              la.id, 20, 5, 0, (r.id % 40 = 0)::int * 3 + (r.id % 40 = 1)::int * 2 + (r.id % 40 = 2)::int, 0, now(), now()
       FROM rooms r JOIN ledger_accounts la ON la.code = 'wallet:R' || r.id AND la.group_id = :g
       WHERE r.group_id = :g""",
]
TOPUPS_SQL = """
WITH t AS (
  INSERT INTO ledger_transfers (group_id, kind, idempotency_key, request_hash, wallet_account_id, amount, channel,
                                reason, actor, detail, created_at)
  SELECT :g, 'topup', 'seed-' || a.id || '-' || k, 'x', a.wallet_account_id, 50 + (a.id % 7) * 10,
         CASE WHEN a.id % 3 = 0 THEN 'online' ELSE 'cash' END, '', 'bench', '{}',
         now() - ((a.id + k) % 40) * interval '1 day' - (a.id % 600) * interval '1 minute'
  FROM prepaid_accounts a, generate_series(1, 2) k WHERE a.group_id = :g
  RETURNING id, wallet_account_id, amount, created_at, channel
)
INSERT INTO ledger_entries (group_id, transfer_id, account_id, amount, created_at)
SELECT :g, t.id, x.account_id, x.amount, t.created_at FROM t
CROSS JOIN LATERAL (VALUES (t.wallet_account_id, t.amount),
                           ((SELECT c.id FROM ledger_accounts c JOIN prepaid_accounts pa ON pa.wallet_account_id =
                             t.wallet_account_id WHERE c.code = 'cash:' || pa.property_id), -t.amount)) x(account_id, amount)
"""
STATE_SQL = """
INSERT INTO prepaid_meter_state (group_id, meter_id, account_id, property_id, utility, active, last_ts,
                                 cost_exact_total, charged_total, period_usage, bound_at)
SELECT :g, m.id, a.id, m.property_id, m.utility, true, now() - interval '1 hour', 0, 0, 0, now()
FROM meters m JOIN prepaid_accounts a ON a.room_id = m.room_id WHERE m.group_id = :g
"""
USAGE_SQL = """
INSERT INTO usage_daily (group_id, meter_id, bucket, energy_kwh, water_m3, readings, resets)
SELECT :g, m.id, date_trunc('day', now() AT TIME ZONE 'Asia/Shanghai') AT TIME ZONE 'Asia/Shanghai' - d * interval '1 day',
       CASE WHEN m.utility = 'electricity' THEN 2 + (m.id % 13) * 0.5 + (d % 7 >= 5)::int * 3 END,
       CASE WHEN m.utility = 'water' THEN 0.2 + (m.id % 5) * 0.1 END, 24, 0
FROM meters m, generate_series(0, CAST(:days AS int) - 1) d WHERE m.group_id = :g
"""
MONTH_SQL = """
INSERT INTO usage_monthly (group_id, meter_id, bucket, energy_kwh, water_m3, readings, resets)
SELECT :g, m.id, date_trunc('month', now() AT TIME ZONE 'Asia/Shanghai') AT TIME ZONE 'Asia/Shanghai',
       CASE WHEN m.utility = 'electricity' THEN 20 + (m.id % 101) END, CASE WHEN m.utility = 'water' THEN 2 + m.id % 7 END,
       500, 0
FROM meters m WHERE m.group_id = :g
"""
EVENTS_SQL = [
    """INSERT INTO alarms (group_id, property_id, kind, state, subject_key, meter_id, detail, occurrences, raised_at,
                           last_seen_at, acknowledged_by_name, cleared_by)
       SELECT :g, m.property_id, 'offline', 'active', 'meter:' || m.id, m.id, '{}', 1, now(), now(), '', ''
       FROM meters m WHERE m.group_id = :g AND m.status = 'offline'""",
    """INSERT INTO commands (group_id, property_id, meter_id, device_id, gateway_id, kind, params, state, attempts,
                             max_attempts, source, actor, error, created_at, expires_at)
       SELECT :g, m.property_id, m.id, m.device_id, d.gateway_id, 'switch', '{"closed": false}', 'confirmed', 1, 3,
              'prepaid', 'bench', '', now() - (m.id % 5000) * interval '1 minute', now() + interval '1 day'
       FROM meters m JOIN devices d ON d.id = m.device_id WHERE m.group_id = :g AND m.id % 50 = 0""",
]


def seed(admin_url: str, rooms: int, meters_per_room: int, history_days: int) -> dict[str, Any]:
    """The group, its operator and every row; returns ids and what was made."""
    from datetime import datetime, timezone
    from decimal import Decimal

    from meterhub.db import service_session
    from meterhub.tariffs import service as tariffs
    from meterhub.tariffs.pricing import PlanVersion
    from meterhub.tenants import service

    marker = uuid.uuid4().hex[:6]
    with service_session() as s:
        group = service.create_group(s, f"Bench {marker}", f"bench-{marker}")
        props = [service.create_property(s, group.id, f"{name} {marker}", code)
                 for name, code in (("Galaxy Mall", "P1"), ("Star Dorms", "P2"))]
        for prop in props:
            tariff = tariffs.create_tariff(s, group.id, f"Flat {prop.code}", property_id=prop.id)
            tariffs.add_version(s, tariff, datetime(2020, 1, 1, tzinfo=timezone.utc),
                                PlanVersion("flat", tariffs.flat_prices(Decimal("1.00"))))
            tariffs.assign(s, group.id, "property", prop.id, tariff)
            water = tariffs.create_tariff(s, group.id, f"Water {prop.code}", "water", property_id=prop.id)
            tariffs.add_version(s, water, datetime(2020, 1, 1, tzinfo=timezone.utc),
                                PlanVersion("flat", tariffs.flat_prices(Decimal("4.00"))))
            tariffs.assign(s, group.id, "property", prop.id, water)
        service.create_operator(s, group.id, f"admin-{marker}", "bench password 42", "group_admin", all_properties=True)
        ids = {"group_id": group.id, "props": [p.id for p in props], "username": f"admin-{marker}"}
    per_floor = max(1, -(-rooms // (2 * 10 * 20)))
    engine = create_engine(admin_url)
    started = time.perf_counter()
    with engine.begin() as conn:
        params = {"g": ids["group_id"], "per_floor": per_floor, "mpr": meters_per_room, "days": history_days}
        for sql in SEED_SQL[:3]:
            conn.execute(text(sql), params)
        extra = conn.execute(text("SELECT count(*) FROM rooms WHERE group_id = :g"), params).scalar() - rooms
        if extra > 0:  # exactly --rooms rooms
            conn.execute(text("DELETE FROM rooms WHERE id IN (SELECT id FROM rooms WHERE group_id = :g "
                              "ORDER BY id DESC LIMIT :n)"), {**params, "n": extra})
        for sql in SEED_SQL[3:]:
            conn.execute(text(sql), params)
        conn.execute(text(TOPUPS_SQL), params)
        conn.execute(text(STATE_SQL), params)
        conn.execute(text(USAGE_SQL), params)
        conn.execute(text(MONTH_SQL), params)
        for sql in EVENTS_SQL:
            conn.execute(text(sql), params)
        ids["rooms"] = conn.execute(text("SELECT count(*) FROM rooms WHERE group_id = :g"), params).scalar()
        ids["meters"] = conn.execute(text("SELECT count(*) FROM meters WHERE group_id = :g"), params).scalar()
    engine.dispose()
    log.info("seeded %d rooms, %d meters in %.1f s", ids["rooms"], ids["meters"], time.perf_counter() - started)
    return ids


def time_jobs() -> dict[str, float]:
    """The background jobs the pages read from, once each (seconds)."""
    from meterhub.db import service_session
    from meterhub.modules.prepaid import forecast_store
    from meterhub.timeseries.property_usage import refresh_all

    out = {}
    started = time.perf_counter()
    with service_session() as s:
        refresh_all(s)
    out["property_usage_refresh_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    with service_session() as s:
        n = forecast_store.refresh(s)
    out["forecast_refresh_s"] = round(time.perf_counter() - started, 2)
    out["forecast_accounts"] = n
    return out


def _login(client: Any, username: str, password: str) -> None:
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    answer = client.post("/login", data={"username": username, "password": password, "csrf_token": token})
    if answer.status_code != 302:
        raise RuntimeError(f"sign-in failed: {answer.status_code}")


def time_page(client: Any, url: str, must: str, runs: int, headers: dict | None = None) -> dict[str, float]:
    """Server time of ``url`` (ms): p50, p95, max over ``runs`` after two warm-up requests."""
    times = []
    for i in range(runs + 2):
        started = time.perf_counter()
        answer = client.get(url, headers=headers or {})
        elapsed = (time.perf_counter() - started) * 1000
        body = answer.get_data(as_text=True)
        if answer.status_code != 200 or must not in body:
            raise RuntimeError(f"{url} answered {answer.status_code} without {must!r}: {body[:300]}")
        if i >= 2:
            times.append(elapsed)
    times.sort()
    return {"p50_ms": round(statistics.median(times), 1), "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 1),
            "max_ms": round(times[-1], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=int(os.environ.get("BENCH_ROOMS", 10_000)))
    parser.add_argument("--meters-per-room", type=int, default=int(os.environ.get("BENCH_METERS_PER_ROOM", 10)))
    parser.add_argument("--history-days", type=int, default=7, help="days of daily usage per meter")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with throwaway_database() as admin_url:
        from meterhub.timeseries.timescale import timescale_installed

        engine = create_engine(admin_url)
        with engine.connect() as conn:
            on_timescale = timescale_installed(conn)
        engine.dispose()
        if on_timescale:
            log.info("bench_dashboards writes rollup rows by hand: run it on plain PostgreSQL")
            return
        os.environ.setdefault("METERHUB_REDIS_URL", "redis://127.0.0.1:6379/0")
        os.environ.update(METERHUB_DATABASE_URL=admin_url, METERHUB_INSTANCE_PATH=str(BENCH_INSTANCE),
                          METERHUB_REDIS_NAMESPACE=f"bench-dashboards-{uuid.uuid4().hex[:8]}")
        from meterhub.app import create_app

        app = create_app()
        with app.app_context():
            ids = seed(admin_url, args.rooms, args.meters_per_room, args.history_days)
            jobs = time_jobs()
        settle(admin_url)
        from meterhub.web_cli import freeze_startup_objects

        freeze_startup_objects()  # as ``meterhub web`` does once started
        client = app.test_client()
        floor = time_page(app.test_client(), "/login", 'name="csrf_token"', args.runs)
        _login(client, ids["username"], "bench password 42")
        p1 = ids["props"][0]
        pages = {
            "dashboard_group": time_page(client, "/", 'id="money"', args.runs),
            "dashboard_property": time_page(client, f"/dashboard/properties/{p1}", 'id="money"', args.runs),
            "room_monitor": time_page(client, "/prepaid/rooms", 'id="monitor-grid"', args.runs),
            "room_monitor_refresh": time_page(client, "/prepaid/rooms", 'id="monitor-grid"', args.runs,
                                              {"HX-Request": "true"}),
            "room_monitor_by_days": time_page(client, "/prepaid/rooms?sort=days&days=3", 'id="monitor-grid"',
                                              args.runs),
            "room_monitor_search": time_page(client, "/prepaid/rooms?q=Tenant%2012", 'id="monitor-grid"', args.runs),
        }
    rows = [{"page": "floor: sign-in form", **floor, "goal_ms": "", "met": "", "x_floor": 1.0}]
    for name, t in pages.items():
        goal = GOALS_MS.get(name)
        rows.append({"page": name, **t, "goal_ms": goal or "", "met": "" if goal is None else
                     ("met" if t["p95_ms"] <= goal else "NOT MET"), "x_floor": round(t["p95_ms"] / floor["p95_ms"], 1)})
    print_table(f"Console pages, {ids['rooms']:,} rooms / {ids['meters']:,} meters, {args.runs} runs (server time)",
                rows)
    print_table("Background jobs the pages read from (once)", [jobs])
    load = [round(x, 2) for x in os.getloadavg()]
    log.info("load average %s", load)
    write_results("web", part="dashboards", entries={
        "rooms": ids["rooms"], "meters": ids["meters"], "runs": args.runs, "floor_p95_ms": floor["p95_ms"],
        "room_monitor_p95_ms": pages["room_monitor"]["p95_ms"],
        "dashboard_group_p95_ms": pages["dashboard_group"]["p95_ms"],
        "dashboard_property_p95_ms": pages["dashboard_property"]["p95_ms"],
        "pages": pages, "jobs": jobs,
    })


if __name__ == "__main__":
    main()
