"""Prepaid fixtures: meters with a flat plan, readings written straight into ``readings``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import text

from meterhub.db import service_session
from meterhub.devices.models import Device, Gateway, Meter
from meterhub.tariffs import service as tariffs
from meterhub.tariffs.pricing import PlanVersion

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class World:
    app: object
    group_id: int
    property_id: int
    room_id: int
    gateway_id: int
    meters: list[int] = field(default_factory=list)
    tariff_id: int = 0


def add_meters(session, group_id: int, property_id: int, gateway_id: int, room_id: int | None, n: int,
               utility: str = "electricity", driver_key: str | None = None) -> list[int]:
    """Meters on devices that can act on them: DTSY1352 (prepaid variant, relay) or a valve water meter."""
    driver_key = driver_key or ("water_valve" if utility == "water" else "acrel_dtsd1352")
    config = {"variant": "dtsy1352"} if driver_key == "acrel_dtsd1352" else {}
    ids = []
    for _ in range(n):
        device = Device(group_id=group_id, property_id=property_id, gateway_id=gateway_id, driver_key=driver_key,
                        address=str(uuid.uuid4().int % 10**9), serial=uuid.uuid4().hex[:12], config=config)
        session.add(device)
        session.flush()
        meter = Meter(group_id=group_id, property_id=property_id, device_id=device.id, room_id=room_id,
                      utility=utility, relay_closed=True, status="online")
        session.add(meter)
        session.flush()
        ids.append(meter.id)
    return ids


def write_readings(session, group_id: int, rows: list[tuple]) -> None:
    """rows: (meter_id, ts, energy_kwh[, water_m3[, sharp, peak, flat, valley]])."""
    for row in rows:
        meter_id, ts, energy = row[:3]
        water = row[3] if len(row) > 3 else None
        regs = row[4:8] if len(row) > 4 else (None, None, None, None)
        session.execute(text(
            "INSERT INTO readings (group_id, meter_id, ts, energy_kwh, water_m3, energy_sharp_kwh, energy_peak_kwh,"
            " energy_flat_kwh, energy_valley_kwh, quality, source) VALUES (:g, :m, :ts, :e, :w, :s, :p, :f, :v, 0,"
            " 'poll') ON CONFLICT DO NOTHING"),
            {"g": group_id, "m": meter_id, "ts": ts, "e": energy, "w": water, "s": regs[0], "p": regs[1],
             "f": regs[2], "v": regs[3]})


@pytest.fixture()
def world(app, group) -> World:
    with app.app_context(), service_session() as s:
        gw = Gateway(group_id=group.group_id, property_id=group.property_id, name=f"gw-{uuid.uuid4().hex[:6]}",
                     host="127.0.0.1", port=1)
        s.add(gw)
        s.flush()
        meters = add_meters(s, group.group_id, group.property_id, gw.id, group.room_id, 3)
        tariff = tariffs.create_tariff(s, group.group_id, "Flat 1.00")
        tariffs.add_version(s, tariff, EPOCH, PlanVersion("flat", tariffs.flat_prices(Decimal("1.00"))))
        tariffs.assign(s, group.group_id, "property", group.property_id, tariff)
        return World(app, group.group_id, group.property_id, group.room_id, gw.id, meters, tariff.id)
