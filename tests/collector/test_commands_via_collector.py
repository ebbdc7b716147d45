"""A relay command from the prepaid layer reaches a real (simulated) meter through the collector that owns
its bus — and without a collector, through the worker holding the same bus lease."""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import select

from meterhub.collector.jobs import bus_owner
from meterhub.commands import worker
from meterhub.commands.service import create_command
from meterhub.db import service_session
from meterhub.devices.models import Device, Gateway, Meter
from meterhub.simulator.server import SimServer
from tests.collector.conftest import DTSD
from tests.collector.test_service import Running, _collector, _wait


class PrepaidBus:
    """One DTSY1352 (prepaid variant, with relay) on a simulated RTU bus in its own thread."""

    def __init__(self) -> None:
        self.sim = DTSD.simulator(1, {"variant": "dtsy1352"})
        self.loop = asyncio.new_event_loop()
        self.server = SimServer([self.sim], framing="rtu")
        self.loop.run_until_complete(self.server.start())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def _point(app, group, port: int) -> int:
    with app.app_context(), service_session() as s:
        gw = s.get(Gateway, group.gateway_id)
        gw.port, gw.bus = port, {"timeout": 0.3}
        device = s.get(Device, group.device_id)
        device.config = {**device.config, "variant": "dtsy1352"}
        return s.execute(select(Meter.id).where(Meter.device_id == group.device_id)).scalar_one()


def _switch(app, meter_id: int, closed: bool) -> str:
    with app.app_context():
        with service_session() as s:
            command_id = create_command(s, s.get(Meter, meter_id), "switch", {"closed": closed}).id
        return worker.execute(command_id)


def test_switch_goes_through_the_collector_that_owns_the_bus(app, group):
    bus = PrepaidBus()
    try:
        meter_id = _point(app, group, bus.server.port)
        with Running(_collector(app, group, interval_s=3600)), app.app_context():
            _wait(lambda: bus_owner(group.gateway_id) is not None)
            assert bus.sim.channel.relay_closed
            assert _switch(app, meter_id, closed=False) == "confirmed"
            assert not bus.sim.channel.relay_closed
            assert _switch(app, meter_id, closed=True) == "confirmed"
            assert bus.sim.channel.relay_closed
    finally:
        bus.close()


def test_without_a_collector_the_worker_holds_the_bus_itself(app, group):
    bus = PrepaidBus()
    try:
        meter_id = _point(app, group, bus.server.port)
        with app.app_context():
            assert bus_owner(group.gateway_id) is None
        assert _switch(app, meter_id, closed=False) == "confirmed"
        assert not bus.sim.channel.relay_closed
        with app.app_context():
            assert bus_owner(group.gateway_id) is None  # the lease was released
    finally:
        bus.close()


def test_read_now_through_the_collector_is_confirmed_with_the_reading(app, group):
    bus = PrepaidBus()
    try:
        meter_id = _point(app, group, bus.server.port)
        with Running(_collector(app, group, interval_s=3600)), app.app_context():
            _wait(lambda: bus_owner(group.gateway_id) is not None)
            with service_session() as s:
                command_id = create_command(s, s.get(Meter, meter_id), "read_now", {}).id
            assert worker.execute(command_id) == "confirmed"
            from meterhub.tenants.audit import AuditEntry

            with service_session() as s:
                detail = s.execute(select(AuditEntry.detail).where(
                    AuditEntry.object_type == "command", AuditEntry.object_id == str(command_id),
                    AuditEntry.action == "command.confirmed")).scalar_one()
            assert detail["via"] == "collector" and detail["values"], detail
    finally:
        bus.close()


def test_a_valve_that_does_not_move_ends_failed_with_the_reason_never_confirmed(app, group):
    """Read-back after every valve command: the stuck valve's command fails and says what the meter reads."""
    from drivers.water_valve.registers import XINTAI
    from meterhub.commands.models import Command
    from meterhub.plugins import driver_registry

    config = {"protocol": "modbus", "valve_profile": "xintai"}
    sim = driver_registry()["water_valve"].simulator(5, config)
    sim.stuck = True
    loop = asyncio.new_event_loop()
    server = SimServer([sim], framing="rtu")
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        with app.app_context():
            with service_session() as s:
                gw = s.get(Gateway, group.gateway_id)
                gw.port, gw.bus = server.port, {"timeout": 0.3}
                device = s.get(Device, group.device_id)
                device.driver_key, device.address, device.config = "water_valve", "5", config
                meter = s.execute(select(Meter).where(Meter.device_id == group.device_id)).scalar_one()
                command_id = create_command(s, meter, "valve", {"open": False}, max_attempts=1).id
            assert worker.execute(command_id) == "failed"
            with service_session() as s:
                error = s.get(Command, command_id).error
            assert "valve close was sent but the meter reads its valve open" in error, error
            assert sim.channel.valve_open and XINTAI.state(sim.current_values(5)["valve"]) is True
            sim.stuck = False
            with service_session() as s:
                meter = s.execute(select(Meter).where(Meter.device_id == group.device_id)).scalar_one()
                command_id = create_command(s, meter, "valve", {"open": False}).id
            assert worker.execute(command_id) == "confirmed" and not sim.channel.valve_open
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
