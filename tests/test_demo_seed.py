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
