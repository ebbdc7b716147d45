"""The polling benchmark's storage run: a throwaway database (bench.common) seeded with the buses' meters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Engine

from bench.common import throwaway_database

Layout = list[list[tuple[int, int]]]  # per bus, by unit: (device id, meter id)


@contextmanager
def scratch_database(buses: int, meters_per_bus: int) -> Iterator[tuple[Engine, list[int], int, Layout]]:
    """Yield (service engine, gateway ids, group id, layout) of a fresh database holding the buses' devices."""
    from meterhub.app import create_app
    from meterhub.db import dispose_service_engines, service_engine, service_session
    from meterhub.devices.models import Device, Gateway, Meter
    from meterhub.tenants import service

    with throwaway_database() as url:
        app = create_app({"SECRET_KEY": "bench", "DATABASE_URL": url, "TESTING": True})
        try:
            with app.app_context():
                with service_session() as s:
                    group = service.create_group(s, "Bench group", "bench")
                    prop = service.create_property(s, group.id, "Bench site", "B1")
                    gateways = [Gateway(group_id=group.id, property_id=prop.id, name=f"bus-{i}", host="127.0.0.1",
                                        port=1, framing="modbus-rtu-over-tcp", bus={}) for i in range(buses)]
                    s.add_all(gateways)
                    s.flush()
                    devices = [Device(group_id=group.id, property_id=prop.id, gateway_id=g.id,
                                      driver_key="acrel_dtsd1352", address=str(u), serial=f"{g.id}-{u}", config={})
                               for g in gateways for u in range(1, meters_per_bus + 1)]
                    s.add_all(devices)
                    s.flush()
                    meters = [Meter(group_id=group.id, property_id=prop.id, device_id=d.id, channel=1)
                              for d in devices]
                    s.add_all(meters)
                    s.flush()
                    pairs = [(d.id, m.id) for d, m in zip(devices, meters)]
                    layout = [pairs[i * meters_per_bus:(i + 1) * meters_per_bus] for i in range(buses)]
                    gateway_ids, group_id = [g.id for g in gateways], group.id
                yield service_engine(app.config["SERVICE_DATABASE_URL"]), gateway_ids, group_id, layout
        finally:
            dispose_service_engines()
