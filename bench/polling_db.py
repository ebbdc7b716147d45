"""A scratch PostgreSQL database for the polling benchmark's storage run: migrated, seeded, then dropped."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

ADMIN_URL = os.environ.get("METERHUB_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def scratch_database(buses: int, meters_per_bus: int) -> Iterator[tuple[Engine, list[int], int, list[list[tuple[int, int]]]]]:
    """Yield (service engine, gateway ids, group id, per bus [(device id, meter id)] by unit) of a fresh database with the buses' devices and meters."""
    from meterhub.app import create_app
    from meterhub.db import dispose_service_engines, service_engine, service_session
    from meterhub.devices.models import Device, Gateway, Meter
    from meterhub.extensions import db
    from meterhub.tenants import service

    name = f"meterhub_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(make_url(ADMIN_URL).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    app = create_app({"SECRET_KEY": "bench", "DATABASE_URL": url, "TESTING": True})
    try:
        with app.app_context():
            from flask_migrate import upgrade

            upgrade(directory=str(Path(__file__).resolve().parent.parent / "meterhub" / "migrations"))
            db.engine.dispose()
            with service_session() as s:
                group = service.create_group(s, "Bench group", "bench")
                prop = service.create_property(s, group.id, "Bench site", "B1")
                gateways = [Gateway(group_id=group.id, property_id=prop.id, name=f"bus-{i}", host="127.0.0.1",
                                    port=1, framing="modbus-rtu-over-tcp", bus={}) for i in range(buses)]
                s.add_all(gateways)
                s.flush()
                devices = [Device(group_id=group.id, property_id=prop.id, gateway_id=g.id, driver_key="acrel_dtsd1352",
                                  address=str(u), serial=f"{g.id}-{u}", config={})
                           for g in gateways for u in range(1, meters_per_bus + 1)]
                s.add_all(devices)
                s.flush()
                s.add_all([Meter(group_id=group.id, property_id=prop.id, device_id=d.id, channel=1) for d in devices])
                s.flush()
                gateway_ids, group_id = [g.id for g in gateways], group.id
                meters = {d.id: m.id for d, m in zip(devices, s.query(Meter).order_by(Meter.device_id))}
                layout = [[(d.id, meters[d.id]) for d in devices[i * meters_per_bus:(i + 1) * meters_per_bus]]
                          for i in range(buses)]
            engine = service_engine(app.config["SERVICE_DATABASE_URL"])
            yield engine, gateway_ids, group_id, layout
    finally:
        dispose_service_engines()
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"), {"d": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()
