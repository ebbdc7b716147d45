"""Acrel 4G meters dial in (issue 17): held until onboarded by their identity, uploads become readings that are
charged, and relay commands go through the command machinery as 0x90 pass-through; bad frames never hurt."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select, text

from meterhub.collector.dialin import DialinListener, pending_key
from meterhub.commands import worker
from meterhub.commands.models import Command
from meterhub.db import service_engine, service_session
from meterhub.devices.models import Device, Meter
from meterhub.devices.onboarding import DeviceSpec, create_gateway, onboard_device
from meterhub.modules.prepaid import accounts, cashier
from meterhub.modules.prepaid.charging import charge_new_intervals
from meterhub.modules.prepaid.models import PrepaidAccount
from meterhub.protocols import acrel4g
from meterhub.redis_conn import get_redis
from meterhub.simulator.dialin import DialinMeterSim
from meterhub.simulator.model import SimClock
from meterhub.tariffs import service as tariffs
from meterhub.tariffs.pricing import PlanVersion
from meterhub.tenants.models import Property
from tests.collector.test_service import REGISTRY, _wait

SERIAL = "86012345678901234567"


class Loop:
    """A listener and a simulated 4G meter on one event loop in a background thread."""

    def __init__(self, app, listener: DialinListener, meter: DialinMeterSim) -> None:
        self.app, self.listener, self.meter = app, listener, meter
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Loop:
        self.thread.start()
        self.task = asyncio.run_coroutine_threadsafe(self._listen(), self.loop)
        _wait(self.listener.ready.is_set)
        self.meter_task = asyncio.run_coroutine_threadsafe(self.meter.run("127.0.0.1", self.listener.port), self.loop)
        return self

    async def _listen(self) -> None:
        with self.app.app_context():  # as under ``meterhub dialin`` (hooks of stored readings need the app)
            await self.listener.run()

    def call(self, fn, *args):
        return self.loop.call_soon_threadsafe(fn, *args)

    def __exit__(self, *exc: object) -> None:
        self.call(self.meter.stop)
        self.meter_task.result(10)
        self.call(self.listener.request_stop)
        self.task.result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def _listener(app) -> DialinListener:
    return DialinListener(engine=service_engine(app.config["SERVICE_DATABASE_URL"]), redis_url=app.config["REDIS_URL"],
                          namespace=app.config["REDIS_NAMESPACE"], host="127.0.0.1", port=0, registry=REGISTRY,
                          attach_s=0.2)


def _meter(serial: str = SERIAL) -> DialinMeterSim:
    device = REGISTRY["acrel_dtsd1352"].simulator(1, {"variant": "dtsy1352"}, clock=SimClock(acceleration=600.0),
                                                base_kw=20.0)
    return DialinMeterSim(device, serial, upload_s=0.3, heartbeat_s=0.2, reconnect_s=0.1)


def _readings(app, meter_id: int) -> int:
    with app.app_context(), service_session() as s:
        return s.execute(text("SELECT count(*) FROM readings WHERE meter_id = :m"), {"m": meter_id}).scalar_one()


def _run_latest_command(app, meter_id: int) -> tuple[str, str]:
    with app.app_context(), service_session() as s:
        command_id = s.execute(select(Command.id).where(Command.meter_id == meter_id, Command.state == "queued")
                               .order_by(Command.id.desc())).scalars().first()
    assert command_id is not None, "no command queued"
    with app.app_context():
        state = worker.execute(command_id)
    with app.app_context(), service_session() as s:
        return state, s.get(Command, command_id).error


def test_a_4g_meter_dials_in_is_onboarded_charged_tripped_and_restored(app, group):
    listener, meter = _listener(app), _meter()
    with Loop(app, listener, meter):
        with app.app_context():
            ns = app.config["REDIS_NAMESPACE"]
            _wait(lambda: get_redis(app).hexists(pending_key(ns), SERIAL))  # held: not attached to any group
            assert listener.stats["uploads"] == 0 and listener.stats["unattached_uploads"] >= 0
            with service_session() as s:
                prop = s.get(Property, group.property_id)
                gateway = create_gateway(s, prop, f"4G-{group.marker}", "", 0, "acrel-4g")
                device = onboard_device(s, gateway, DeviceSpec("acrel_dtsd1352", 1, SERIAL, {"variant": "dtsy1352"},
                                                               room_ids=[group.room_id]))
                meter_id = s.execute(select(Meter.id).where(Meter.device_id == device.id)).scalar_one()
            _wait(lambda: listener.stats["uploads"] >= 2 and _readings(app, meter_id) >= 2, timeout=15)
            assert meter.time_synced is not None and len(meter.time_synced) == 7
            assert not get_redis(app).hexists(pending_key(ns), SERIAL)

            with service_session() as s:
                tariff = tariffs.create_tariff(s, group.group_id, "Flat 1.00")
                tariffs.add_version(s, tariff, datetime(2026, 1, 1, tzinfo=UTC),
                                    PlanVersion("flat", tariffs.flat_prices(Decimal("1.00"))))
                tariffs.assign(s, group.group_id, "meter", meter_id, tariff)
                account = accounts.create_account(s, group.group_id, group.property_id, [meter_id],
                                                  customer_name="Li Lei", alarm1="8.00", alarm2="4.00", actor="t")
                account_id = account.id
                cashier.topup(s, group.group_id, account_id, "1.00", "cash", f"4g-{account_id}", actor="t")
            _run_latest_command(app, meter_id)  # the opening's switch-on, through pass-through
            time.sleep(1.0)  # 600x clock: about 3 kWh more
            _wait(lambda: _readings(app, meter_id) >= 5, timeout=10)

            def in_arrears() -> bool:  # a loaded machine uploads less per second: charge what has come so far
                with service_session() as s:
                    charge_new_intervals(s, until=None)
                    return s.get(PrepaidAccount, account_id).alarm_level == 3

            _wait(in_arrears, timeout=30)  # more than ¥1.00 used: arrears
            assert _run_latest_command(app, meter_id) == ("confirmed", "")
            assert meter.device.channel.relay_closed is False  # tripped through 0x90 pass-through
            with service_session() as s:
                cashier.topup(s, group.group_id, account_id, "500.00", "cash", f"4g-more-{account_id}", actor="t")
            assert _run_latest_command(app, meter_id) == ("confirmed", "")
            assert meter.device.channel.relay_closed is True
            assert meter.passthrough >= 4  # cut-off and restore, each read back

            _wait(lambda: _latest_relay(app, meter_id) is True, timeout=10)
            with service_session() as s:
                values = s.execute(text("SELECT extra->>'keep_power' FROM readings WHERE meter_id = :m ORDER BY ts DESC LIMIT 1"),
                                   {"m": meter_id}).scalar()
            assert not values  # a restore is never reported as keep-power

            connections = meter.connections
            meter.drop_link()
            _wait(lambda: meter.connections > connections and listener.sessions, timeout=10)  # reconnects
            stored = _readings(app, meter_id)
            _wait(lambda: _readings(app, meter_id) > stored, timeout=10)


def _latest_relay(app, meter_id: int) -> bool | None:
    with app.app_context(), service_session() as s:
        return s.execute(text("SELECT relay_closed FROM readings WHERE meter_id = :m ORDER BY ts DESC LIMIT 1"),
                         {"m": meter_id}).scalar()


def test_bad_frames_and_floods_are_counted_and_dropped(app, group):
    listener, meter = _listener(app), _meter("86099999999999999999")
    with Loop(app, listener, meter):
        bad_crc = bytearray(acrel4g.encode(0x94)); bad_crc[3] ^= 0x55  # noqa: E702
        with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as sock:
            sock.sendall(b"\x00garbage" + bytes(bad_crc) + acrel4g.encode(0x55, b"x") + acrel4g.encode(0x91, b"[[1"))
            time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as sock:
            try:
                sock.sendall(acrel4g.encode(0x94) * 200)  # a flood: the connection is closed
                sock.settimeout(5)
                assert sock.recv(10) == b""
            except ConnectionError:
                pass
        _wait(lambda: listener.stats["floods"] >= 1 and listener.stats["bad_crc"] >= 1
              and listener.stats["unknown_command"] >= 1 and listener.stats["bad_body"] >= 1)
        _wait(lambda: meter.uploads >= 2)  # the real meter was never disturbed
        with app.app_context(), service_session() as s:
            assert not s.execute(select(Device.id).where(Device.serial == "86099999999999999999")).first()
        assert listener.stats["uploads"] == 0  # nothing is stored for an identity nobody onboarded


def test_onboarding_refuses_an_identity_that_never_dialed_in(app, group):
    import pytest

    from meterhub.errors import ValidationError

    with app.app_context(), service_session() as s:
        prop = s.get(Property, group.property_id)
        gateway = create_gateway(s, prop, f"4G-none-{group.marker}", "", 0, "acrel-4g")
        with pytest.raises(ValidationError, match="dialed in"):
            onboard_device(s, gateway, DeviceSpec("acrel_dtsd1352", 1, "99999999999999999999",
                                                  {"variant": "dtsy1352"}))
