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


async def _read_fleet(data: dict) -> dict:
    """What the drivers read of every simulated meter now: {(serial, channel): values}."""
    from meterhub.driver import DeviceRef
    from meterhub.transports import open_transport

    registry, out = driver_registry(), {}
    for gateway in data["gateways"]:
        async with open_transport(gateway["host"], gateway["port"], gateway["framing"]) as bus:
            for device in (d for d in data["devices"] if d["gateway"] == gateway["name"]):
                driver = registry[device["driver"]]
                ref = DeviceRef(address=device["address"], config=driver.validate_config(device["config"]))
                for reading in await driver.read(bus, ref):
                    out[(device["serial"], reading.channel)] = reading.values
    return out


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
    live = asyncio.run(_read_fleet(data))
    try:
        with app.app_context():
            with service_session() as s:
                group = seed_tenancy(s, "demo-history")  # a group of its own: the other demo test seeds 'demo'
                onboard_fleet(s, group, data)
                seed_prepaid(s, group)
                stored = seed_history(s, group, data, days=days)
                meters = s.execute(text("SELECT m.id, m.utility, d.serial, m.channel FROM meters m JOIN devices d "
                                        "ON d.id = m.device_id WHERE m.group_id = :g"), {"g": group.id}).all()
                assert stored == len(meters) * (days * 24 + 1)
            with service_session() as s:
                assert seed_history(s, group, data, days=days) == 0, "meters with readings keep them"
                for meter_id, utility, serial, channel in meters:
                    column = "water_m3" if utility == "water" else "energy_kwh"
                    series = s.execute(text(f"SELECT ts, {column} FROM readings WHERE meter_id = :m ORDER BY ts"),
                                       {"m": meter_id}).all()
                    values = [v for _, v in series]
                    assert values == sorted(values) and values[0] > 0, "counters only grow, from a used meter's"
                    assert series[-1][0] == installed_at and series[-2][0] > installed_at - timedelta(hours=1)
                    # the live meter goes on from its history: what the driver reads of it now (registers in
                    # steps of 0.01 x the CT/PT ratio) is never below the last history reading, per TOU rate too
                    last = s.execute(text("SELECT * FROM readings WHERE meter_id = :m ORDER BY ts DESC LIMIT 1"),
                                     {"m": meter_id}).mappings().one()
                    keys = ("water_m3",) if utility == "water" else (
                        "energy_kwh", *(f"energy_{k}_kwh" for k in ("sharp", "peak", "flat", "valley")))
                    for key in keys:
                        assert Decimal(0) <= live[(serial, channel)][key] - last[key] < Decimal("5"), key
                    state = s.execute(text("SELECT last_total FROM prepaid_meter_state WHERE meter_id = :m"),
                                      {"m": meter_id}).scalar()
                    assert state is None, "an account opened before the history starts at the first live reading"
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
