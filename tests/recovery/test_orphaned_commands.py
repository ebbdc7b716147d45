"""Finding 3 and 4 of issue 22: work left by a worker killed with SIGKILL is resolved by the platform itself.

- A command ``sent`` by a worker that died is resolved in seconds (was: ``sent`` until its 2-hour TTL): the next
  worker reads the meter and confirms it when the device shows it, or sends it again when it does not.
- A command whose rq job was lost before the command was marked ``sent`` is enqueued again within the lost-job
  deadline (was: 10 minutes).
- Scheduled retries (``enqueue_in``) run after the process serving them was killed: another live worker takes
  the scheduler lock within its 10 s TTL (was: none, for 10 minutes).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from sqlalchemy import select

from meterhub.collector.jobs import jobs_key, lease_key, namespace
from meterhub.commands import worker
from meterhub.commands.models import Command
from meterhub.commands.service import create_command
from meterhub.db import service_session
from meterhub.devices.models import Device, Meter
from meterhub.driver.base import DeviceRef
from meterhub.redis_conn import get_queue, get_redis, redis_key
from meterhub.tenants.audit import AuditEntry
from meterhub.transports import open_transport
from tests.collector.conftest import DTSD
from tests.collector.test_commands_via_collector import PrepaidBus, _point
from tests.recovery.conftest import command_row, wait_for

RECOVERY_LIMIT_S = 60  # what the issue asks; with the test deadlines it takes a few seconds


def _switch_on_the_meter(app, meter_id: int, port: int, closed: bool) -> None:
    """What the hung bus owner did before it stopped answering: the write reached the meter."""
    with app.app_context(), service_session() as s:
        device = s.get(Device, s.get(Meter, meter_id).device_id)
        ref = DeviceRef(address=device.address, config=dict(device.config), serial=device.serial)

    async def write() -> None:
        async with open_transport("127.0.0.1", port, "rtu") as bus:
            await DTSD.switch(bus, ref, channel=1, closed=closed)

    asyncio.run(write())


def _actions(app, command_id: int) -> list[tuple[str, dict]]:
    with app.app_context(), service_session() as s:
        return [(a, d) for a, d in s.execute(select(AuditEntry.action, AuditEntry.detail).where(
            AuditEntry.object_type == "command", AuditEntry.object_id == str(command_id)).order_by(AuditEntry.id))]


def _dispatch_until(app, predicate, timeout: float, what: str) -> float:
    """Run the dispatcher (the scheduler's 15 s job) every half second until ``predicate()``."""
    def tick() -> bool:
        with app.app_context():
            worker.dispatch()
        return predicate()

    return wait_for(tick, timeout, what, step=0.5)


@pytest.mark.parametrize("reached_meter", [True, False], ids=["write-reached-meter", "write-lost"])
def test_command_sent_by_a_killed_worker_is_resolved_by_reading_the_meter(fast_app, group, workers, reached_meter):
    app = fast_app
    bus = PrepaidBus()
    try:
        meter_id = _point(app, group, bus.server.port)
        with app.app_context():
            client, ns = get_redis(), namespace()
            # a collector owns the bus but has stopped answering: the worker waits for it with the command sent
            client.set(lease_key(ns, group.gateway_id), "collector:hung", px=120_000)
            with service_session() as s:
                command_id = create_command(s, s.get(Meter, meter_id), "switch", {"closed": False}).id
            assert bus.sim.channel.relay_closed
            first = workers("first")
            worker.dispatch()
        wait_for(lambda: command_row(app, command_id).state == "sent", 30, "the first worker sends the command")
        wait_for(lambda: client.llen(jobs_key(ns, group.gateway_id)) > 0, 30, "the write is handed to the bus owner")
        if reached_meter:
            assert client.lpop(jobs_key(ns, group.gateway_id))  # the hung owner took the write...
            _switch_on_the_meter(app, meter_id, bus.server.port, closed=False)  # ...and it reached the meter
        first.kill()
        killed_at = time.monotonic()
        client.delete(lease_key(ns, group.gateway_id), jobs_key(ns, group.gateway_id))  # the hung owner is gone
        assert command_row(app, command_id).state == "sent"  # what stayed for 2 hours before
        workers("second")
        took = _dispatch_until(app, lambda: command_row(app, command_id).state == "confirmed", RECOVERY_LIMIT_S,
                               "the orphaned command is resolved")
        assert time.monotonic() - killed_at < RECOVERY_LIMIT_S, took
        row = command_row(app, command_id)
        assert row.attempts == 2 and row.owner != "collector:hung"
        actions = _actions(app, command_id)
        assert [a for a, _ in actions] == ["command.queued", "command.sent", "command.queued", "command.sent",
                                           "command.confirmed"]
        requeued, confirmed = actions[2][1], actions[-1][1]
        assert "stopped while sending it" in requeued["error"]
        assert ("verified" in confirmed) is reached_meter  # shown on the meter: confirmed without a second write
        assert not bus.sim.channel.relay_closed
        with app.app_context(), service_session() as s:
            assert s.get(Meter, meter_id).relay_closed is False
    finally:
        bus.close()


def test_command_whose_rq_job_was_lost_is_enqueued_again(fast_app, group, workers):
    app = fast_app
    bus = PrepaidBus()
    try:
        meter_id = _point(app, group, bus.server.port)
        with app.app_context():
            with service_session() as s:
                command_id = create_command(s, s.get(Meter, meter_id), "switch", {"closed": False}).id
            assert worker.dispatch() == [command_id]
            job_id = command_row(app, command_id).job_id
            assert job_id and get_queue("commands").fetch_job(job_id) is not None
            get_queue("commands").fetch_job(job_id).delete()  # the job died before the command was marked sent
            assert worker.dispatch() == []  # dispatched already: the old rule waited 10 minutes
        lost_at = time.monotonic()
        workers("worker")
        _dispatch_until(app, lambda: command_row(app, command_id).state == "confirmed", RECOVERY_LIMIT_S,
                        "the command of a lost job is sent")
        assert time.monotonic() - lost_at < RECOVERY_LIMIT_S  # lost-job deadline 4 s here, 30 s by default
        assert command_row(app, command_id).job_id != job_id
        assert not bus.sim.channel.relay_closed
    finally:
        bus.close()


def test_scheduled_retries_run_after_the_scheduling_worker_was_killed(fast_app, group, workers):
    app = fast_app
    bus = PrepaidBus()
    try:
        meter_id = _point(app, group, bus.server.port)
        first = workers("first")
        with app.app_context():
            client = get_redis()
            lock = redis_key("rq", "scheduler")
            wait_for(lambda: client.get(lock) is not None, 30, "a worker is elected rq scheduler")
            holder = client.get(lock)
            first.kill()
            assert client.get(lock) == holder  # the dead holder's lock is still there...
            with service_session() as s:
                command_id = create_command(s, s.get(Meter, meter_id), "read_now", {}).id
                s.get(Command, command_id).enqueued_at = s.execute(select(Command.created_at).where(
                    Command.id == command_id)).scalar()
            worker.enqueue([command_id], delay=__import__("datetime").timedelta(seconds=1))  # a back-off retry
        killed_at = time.monotonic()
        workers("second")
        wait_for(lambda: command_row(app, command_id).state == "confirmed", 40, "the scheduled job runs")
        assert time.monotonic() - killed_at < 25  # lock TTL 10 s + a worker start
        with app.app_context():
            assert client.get(lock) not in (None, holder)  # ...until it expired with its holder
            detail = json.loads(json.dumps(_actions(app, command_id)[-1][1]))
            assert detail["values"], detail
    finally:
        bus.close()
