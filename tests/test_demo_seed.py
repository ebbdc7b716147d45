"""What `make run` seeds: the demo group and a simulated fleet onboarded by reading every device, prepaid
accounts, a payment channel and a portal login — and running it twice changes nothing."""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import func, select

from meterhub.db import service_session
from meterhub.demo_seed import DEMO_OPERATORS, onboard_fleet, seed_prepaid, seed_tenancy
from meterhub.devices.models import Device, Meter
from meterhub.modules.prepaid.models import PrepaidAccount
from meterhub.plugins import driver_registry
from meterhub.simulator.fleet import Fleet
from tests.conftest import csrf_token


def _count(s, model, group_id) -> int:
    return s.execute(select(func.count()).select_from(model).where(model.group_id == group_id)).scalar()


def test_demo_seed_onboards_the_fleet_and_is_idempotent(app, client):
    fleet = Fleet(driver_registry(), gateways=3, devices=2,
                  drivers=["acrel_adf300", "acrel_dtsd1352", "water_valve"])
    loop = asyncio.new_event_loop()
    loop.run_until_complete(fleet.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        with app.app_context():
            for _ in range(2):  # the second run (a restart of `make run`) finds everything in place
                with service_session() as s:
                    group = seed_tenancy(s)
                    onboard_fleet(s, group, fleet.onboarding())
                    seed_prepaid(s, group)
            with service_session() as s:
                assert _count(s, Device, group.id) == 6
                meters = _count(s, Meter, group.id)
                assert meters >= 6  # an ADF300 box has many circuits
                accounts = _count(s, PrepaidAccount, group.id)
                assert 0 < accounts <= meters
    finally:
        asyncio.run_coroutine_threadsafe(fleet.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    username, password, _role, _ = DEMO_OPERATORS[0]
    client.post("/login", data={"username": username, "password": password, "csrf_token": csrf_token(client)})
    assert "sim-gw-1" in client.get("/gateways").get_data(as_text=True)


def test_demo_history_fills_a_year_of_readings_that_the_live_meters_continue(app):
    """`simulate --installed` starts meters with counters of meters in use; the seed stores their past readings
    (from the same load profile), rolls them up, opens accounts on top of them, and a second run adds nothing."""
    from datetime import datetime, timedelta
    from decimal import Decimal

    from sqlalchemy import text

    from meterhub.demo_seed import seed_history
    from meterhub.reports.filters import ReportFilter
    from meterhub.reports.usage import monthly_rows, usage_rows

    fleet = Fleet(driver_registry(), gateways=3, devices=1, drivers=["acrel_adf300", "acrel_dtsd1352", "water_valve"],
                  installed=True, base_port=0)
    data = fleet.onboarding()
    installed_at = datetime.fromisoformat(data["installed_at"]).astimezone()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(fleet.start())
    data = fleet.onboarding()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    days = 70
    try:
        with app.app_context():
            with service_session() as s:
                group = seed_tenancy(s, "demo-history")  # a group of its own: the other demo test seeds 'demo'
                onboard_fleet(s, group, data)
                stored = seed_history(s, group, data, days=days)
                meters = s.execute(text("SELECT m.id, m.utility, d.serial, m.channel FROM meters m JOIN devices d "
                                        "ON d.id = m.device_id WHERE m.group_id = :g"), {"g": group.id}).all()
                assert stored == len(meters) * days * 24
                seed_prepaid(s, group)
            with service_session() as s:
                assert seed_history(s, group, data, days=days) == 0, "meters with readings keep them"
                sims = {(getattr(sim, "serial", None), i + 1): channel for server in fleet.servers
                        for sim in server.devices for i, channel in enumerate(sim.meter_channels())}
                for meter_id, utility, serial, channel in meters:
                    column = "water_m3" if utility == "water" else "energy_kwh"
                    series = s.execute(text(f"SELECT ts, {column} FROM readings WHERE meter_id = :m ORDER BY ts"),
                                       {"m": meter_id}).all()
                    values = [v for _, v in series]
                    assert values == sorted(values) and values[0] > 0, "counters only grow, from a used meter's"
                    assert series[-1][0] < installed_at <= series[-1][0] + timedelta(hours=1)
                    live = sims[(serial, channel)]
                    now = live.volume_m3 if utility == "water" else live.total_kwh
                    assert Decimal(0) <= now - values[-1] < Decimal("5"), "the live meter goes on from its history"
                    state = s.execute(text("SELECT last_total FROM prepaid_meter_state WHERE meter_id = :m"),
                                      {"m": meter_id}).scalar()
                    assert state in (None, values[-1]), "an account opened on it starts at its last reading"
                end = installed_at.date()
                f = ReportFilter(group.id, end - timedelta(days=30), end, timezone=group.timezone)
                rows = list(usage_rows(s, f))
                assert len(rows) == 30 * len(meters)
                assert all(r[6] > 0 for r in rows), "every meter used something every day"
                for r in rows:
                    if r[5] == "electricity":
                        assert abs(sum(r[7:11]) - r[6]) <= Decimal("0.05"), "the TOU split adds up to the total"
                month = (end.replace(day=1) - timedelta(days=1)).replace(day=1)
                monthly = list(monthly_rows(s, ReportFilter(group.id, month, month + timedelta(days=1),
                                                            timezone=group.timezone, level="property")))
                assert monthly and all(r[6] > 0 and r[15] is not None for r in monthly), "month on month has data"
    finally:
        asyncio.run_coroutine_threadsafe(fleet.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
