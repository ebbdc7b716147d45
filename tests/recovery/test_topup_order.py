"""Finding 8 of issue 22: meter-side top-up writes, one per purchase count, reach the meter in order.

A simulated DTSY1352 (meter-side prepaid) takes a top-up only with its purchase count + 1 (else Modbus exception
03, as the real meter). Each test tops up an account through the cashier (real ledger, real commands) and
executes the commands through the real driver, bus lease and Redis.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from meterhub.alarms.models import Alarm
from meterhub.commands import worker
from meterhub.commands.models import Command
from meterhub.db import service_session
from meterhub.models import utcnow
from meterhub.modules.prepaid import accounts, cashier
from meterhub.redis_conn import get_queue
from meterhub.tariffs import service as tariffs
from meterhub.tariffs.models import Tariff
from meterhub.tenants.audit import AuditEntry
from meterhub.devices.models import Device
from meterhub.simulator.server import SimServer
from tests.collector.conftest import DTSD
from tests.collector.test_commands_via_collector import PrepaidBus, _point

METER_SIDE = {"variant": "dtsy1352", "prepaid_mode": "meter"}


class MeterSideBus(PrepaidBus):
    """One DTSY1352 that holds the balance itself (meter-side prepaid) on a simulated RTU bus."""

    def __init__(self) -> None:
        import asyncio
        import threading

        self.sim = DTSD.simulator(1, METER_SIDE)
        self.loop = asyncio.new_event_loop()
        self.server = SimServer([self.sim], framing="rtu")
        self.loop.run_until_complete(self.server.start())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()


def _meter_side(app, group, bus: MeterSideBus) -> int:
    meter_id = _point(app, group, bus.server.port)
    with app.app_context(), service_session() as s:
        device = s.get(Device, group.device_id)
        device.config = {**device.config, **METER_SIDE}
    return meter_id

AMOUNTS = ("30.00", "20.00", "50.00")


def _account_with_topups(app, group, meter_id: int, amounts=AMOUNTS) -> list[int]:
    """Open an account on the meter and top it up once per amount; the write_topup command ids, in order."""
    tariff_id = group.tariff_id
    with app.app_context(), service_session() as s:
        tariffs.assign(s, group.group_id, "property", group.property_id, s.get(Tariff, tariff_id))
        account = accounts.create_account(s, group.group_id, group.property_id, [meter_id], room_id=group.room_id,
                                          customer_name="Shop", phone="13800000000", actor="pytest")
        for n, amount in enumerate(amounts):
            cashier.topup(s, group.group_id, account.id, amount, "cash", f"order-{account.id}-{n}", actor="pytest")
        return list(s.execute(select(Command.id).where(Command.meter_id == meter_id, Command.kind == "write_topup")
                              .order_by(Command.id)).scalars())


def _open(app, meter_id: int) -> list[int]:
    with app.app_context(), service_session() as s:
        return list(s.execute(select(Command.id).where(Command.meter_id == meter_id,
                                                       Command.state.in_(("queued", "sent"))).order_by(Command.id))
                    .scalars())


def _states(app, ids: list[int]) -> list[str]:
    with app.app_context(), service_session() as s:
        return [s.get(Command, i).state for i in ids]


def _alarms(app, meter_id: int) -> list[Alarm]:
    with app.app_context(), service_session() as s:
        return list(s.execute(select(Alarm).where(Alarm.meter_id == meter_id, Alarm.kind == "topup_not_on_meter")
                              .order_by(Alarm.id)).scalars())


def _run_in_order(app, meter_id: int) -> None:
    """Execute the meter's open commands as workers would: the head first, then whatever is handed over."""
    with app.app_context():
        for _ in range(20):
            heads = _open(app, meter_id)
            if not heads:
                return
            worker.execute(heads[0])
    raise AssertionError("commands still open after 20 executions")


def test_one_outstanding_command_per_meter_in_the_order_issued(app, group):
    bus = MeterSideBus()
    try:
        meter_id = _meter_side(app, group, bus)
        writes = _account_with_topups(app, group, meter_id)
        money = bus.sim.channel.money()
        with app.app_context():
            get_queue("commands").empty()
            assert worker.execute(writes[-1]) == "queued"  # a newer write steps back while older ones are open
            assert bus.sim.channel.purchase_count == 0
            mine = set(_open(app, meter_id))
            handed = [c for c in worker.dispatch() if c in mine]
            assert handed == [_open(app, meter_id)[0]]  # only the meter's oldest is handed to rq
            first = _open(app, meter_id)[0]
            worker.execute(first)
            nxt = _open(app, meter_id)[0]
            with service_session() as s:
                assert s.get(Command, nxt).job_id  # the end of one hands the next to rq at once
        _run_in_order(app, meter_id)
        assert _states(app, writes) == ["confirmed"] * 3
        assert bus.sim.channel.purchase_count == 3
        assert bus.sim.channel.money() - money == sum(Decimal(a) for a in AMOUNTS)
    finally:
        bus.close()


def test_refused_write_resyncs_the_missing_counts_in_order(app, group):
    bus = MeterSideBus()
    try:
        meter_id = _meter_side(app, group, bus)
        writes = _account_with_topups(app, group, meter_id)
        money = bus.sim.channel.money()
        with app.app_context():
            with service_session() as s:  # the first write waited too long (a database blip, a dead bus)
                s.get(Command, writes[0]).expires_at = utcnow()
            worker.dispatch()
        assert _states(app, writes)[0] == "expired"
        (alarm,) = _alarms(app, meter_id)
        assert alarm.state == "active" and Decimal(alarm.detail["amount"]) == Decimal("30.00")
        assert alarm.detail["our_count"] == 1
        _run_in_order(app, meter_id)  # the second write is refused (count 2 on a meter at 1 - 1): re-synced
        assert _states(app, writes) == ["confirmed"] * 3  # the expired write reached the meter after all
        assert bus.sim.channel.purchase_count == 3
        assert bus.sim.channel.money() - money == Decimal("100.00")
        with app.app_context(), service_session() as s:
            detail = s.execute(select(AuditEntry.detail).where(
                AuditEntry.object_type == "command", AuditEntry.object_id == str(writes[1]),
                AuditEntry.action == "command.confirmed")).scalar_one()
            assert detail["resync_from"] == 0 and detail["written"] == [1, 2]
        assert _alarms(app, meter_id)[0].state == "cleared"
    finally:
        bus.close()


def test_a_refusal_that_needs_a_person_raises_an_alarm_with_the_amount(app, group):
    bus = MeterSideBus()
    try:
        meter_id = _meter_side(app, group, bus)
        writes = _account_with_topups(app, group, meter_id)
        with app.app_context():
            while _states(app, writes)[1] != "confirmed":
                worker.execute(_open(app, meter_id)[0])
        assert bus.sim.channel.purchase_count == 2
        bus.sim.channel.purchase_count = 0  # the meter was reset: counts it confirmed are gone
        _run_in_order(app, meter_id)
        assert _states(app, writes) == ["confirmed", "confirmed", "failed"]  # never the old top-ups twice
        assert bus.sim.channel.purchase_count == 0
        (alarm,) = _alarms(app, meter_id)
        assert alarm.state == "active" and alarm.detail["meter_count"] == 0 and alarm.detail["our_count"] == 3
        assert Decimal(alarm.detail["amount"]) == Decimal("50.00")
        assert "reset or replaced" in alarm.detail["reason"]
    finally:
        bus.close()
