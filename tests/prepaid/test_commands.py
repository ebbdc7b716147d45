"""Commands: state machine, execution through a driver under the bus lock, retries, TTL, audit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from meterhub.collector.jobs import lease_key, namespace
from meterhub.commands import worker
from meterhub.commands.models import Command
from meterhub.commands.service import InvalidTransition, create_command, transition
from meterhub.db import service_session
from meterhub.devices.models import Meter
from meterhub.models import utcnow
from meterhub.protocols.errors import UnsupportedCommand
from meterhub.redis_conn import get_redis
from meterhub.tenants.audit import AuditEntry


class FakeBus:
    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False


class FakeDriver:
    key = "fake"

    def __init__(self, fail: int = 0, unsupported: bool = False):
        self.calls, self.fail, self.unsupported, self.locked = [], fail, unsupported, []

    async def switch(self, transport, device, channel, closed):
        self.locked.append(bool(get_redis().exists(lease_key(namespace(), self.gateway_id))))
        if self.unsupported:
            raise UnsupportedCommand("no relay", where="x")
        if self.fail:
            self.fail -= 1
            raise TimeoutError("no answer")
        self.calls.append((device.address, channel, closed))


def run(world, driver, command_id):
    with world.app.app_context():
        return worker.execute(command_id, registry={"acrel_dtsd1352": driver}, transport_factory=lambda g: FakeBus())


def queue(world, meter_id, **kw) -> int:
    with world.app.app_context(), service_session() as s:
        return create_command(s, s.get(Meter, meter_id), "switch", {"closed": False}, **kw).id


def test_switch_confirmed_holding_the_bus_lease(world):
    driver = FakeDriver()
    driver.gateway_id = world.gateway_id
    command_id = queue(world, world.meters[0])
    assert run(world, driver, command_id) == "confirmed"
    assert driver.calls and driver.locked == [True]
    with world.app.app_context(), service_session() as s:
        assert s.get(Meter, world.meters[0]).relay_closed is False
        actions = s.execute(select(AuditEntry.action).where(AuditEntry.object_type == "command",
                                                            AuditEntry.object_id == str(command_id))
                            .order_by(AuditEntry.id)).scalars().all()
        assert actions == ["command.queued", "command.sent", "command.confirmed"]
        assert not get_redis().exists(lease_key(namespace(), world.gateway_id))
    assert run(world, driver, command_id) == "confirmed"  # a duplicate job does nothing
    assert len(driver.calls) == 1


def test_retries_then_failed_and_unsupported(world):
    driver = FakeDriver(fail=10)
    driver.gateway_id = world.gateway_id
    command_id = queue(world, world.meters[1], max_attempts=2)
    assert run(world, driver, command_id) == "queued"
    assert run(world, driver, command_id) == "failed"
    with world.app.app_context(), service_session() as s:
        command = s.get(Command, command_id)
        assert command.attempts == 2 and "no answer" in command.error
        with pytest.raises(InvalidTransition):
            transition(s, command, "sent")
    bad = FakeDriver(unsupported=True)
    bad.gateway_id = world.gateway_id
    assert run(world, bad, queue(world, world.meters[2])) == "failed"


def test_ttl_expiry_and_dispatch(world):
    command_id = queue(world, world.meters[0], ttl=timedelta(seconds=-1))
    with world.app.app_context():
        assert command_id not in worker.dispatch()  # expired by dispatch, never enqueued
        with service_session() as s:
            assert s.get(Command, command_id).state == "expired"
    fresh = queue(world, world.meters[0])
    with world.app.app_context():
        assert fresh in worker.dispatch()
        assert fresh not in worker.dispatch()  # enqueued once
        with service_session() as s:
            assert s.get(Command, fresh).enqueued_at <= utcnow()
