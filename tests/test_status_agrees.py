"""Status that agrees with itself (issue 21 item 10): a circuit follows its device, last contact is always shown,
gateway and device settings read as labelled fields, and simulated buses have distinct serials."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy import select

from meterhub.collector.store import Pending, StorageSink
from meterhub.db import service_engine, service_session
from meterhub.devices.models import Device, Gateway, Meter
from meterhub.plugins import driver_registry
from meterhub.simulator.fleet import Fleet


def test_circuits_follow_their_device_when_it_answers(app, group):
    with app.app_context(), service_session() as s:
        meter = s.execute(select(Meter).where(Meter.device_id == group.device_id)).scalar_one()
        assert meter.status == "unknown"  # onboarded without reading it (fixture): nothing known yet
    at = datetime.now(UTC).replace(microsecond=0)
    with app.app_context():
        StorageSink(service_engine()).write(Pending(device_seen={group.device_id: at}))
    with app.app_context(), service_session() as s:
        device = s.get(Device, group.device_id)
        meter = s.execute(select(Meter).where(Meter.device_id == group.device_id)).scalar_one()
        assert (device.status, meter.status) == ("online", "online")
        assert meter.last_seen_at == at == device.last_seen_at


def test_pages_show_last_contact_and_settings_as_labelled_fields(app, client, operator, group):
    with app.app_context(), service_session() as s:
        s.get(Gateway, group.gateway_id).bus = {"baud": 9600, "parity": "E", "timeout": 1.5}
        s.get(Device, group.device_id).status = "online"  # a device said online, its circuit not judged yet
    operator("group_admin")
    gateway = client.get(f"/gateways/{group.gateway_id}").get_data(as_text=True)
    shown = " ".join(re.sub(r"<[^>]+>", " ", gateway).split())  # the page's text: a field's label, then its value
    assert "{'baud'" not in gateway and "Baud rate 9600" in shown and "Parity Even" in shown, shown
    assert "Never" in gateway or "never" in gateway  # the device was never heard from: said so, not "—"
    device = client.get(f"/devices/{group.device_id}").get_data(as_text=True)
    assert '{"ct"' not in device and "CT ratio" in device and "Model variant" in device
    circuits = device.split("Meters</h2>", 1)[-1]
    assert "Unknown" not in circuits and "Online" in circuits  # the circuit shows its device's state
    assert f'/rooms/{group.room_id}">{group.room_id}</a>' not in circuits  # the room by its label, not its id
    assert f'/rooms/{group.room_id}">B {group.marker}-101</a>' in circuits


def test_simulated_buses_have_distinct_serials_and_names():
    registry = driver_registry()
    for driver in ("acrel_dtsd1352", "acrel_adf300", "water_valve"):
        one = Fleet(registry, gateways=2, devices=3, drivers=[driver])
        another = Fleet(registry, gateways=1, devices=3, drivers=[driver], first_gateway=3)  # a second process
        devices = one.devices + another.devices
        serials = [d["serial"] for d in devices]
        assert len(set(serials)) == len(serials), (driver, serials)
        names = [g["name"] for g in one.gateways + another.gateways]
        assert len(set(names)) == len(names)
        for fleet in (one, another):
            for gateway in fleet.gateways:
                addresses = [d["address"] for d in fleet.devices if d["gateway"] == gateway["name"]]
                assert len(set(addresses)) == len(addresses)
