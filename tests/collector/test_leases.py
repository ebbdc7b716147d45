"""Bus leases in PostgreSQL: epochs only grow, one holder at a time, rendezvous spreading, a poller that stops
talking when its lease runs out, and results of a stale owner refused (readings and command confirmations)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select, text

from meterhub.collector import leases
from meterhub.collector.bus import NullSink
from meterhub.collector.store import Pending, StorageSink
from meterhub.commands import worker
from meterhub.commands.service import create_command
from meterhub.db import service_engine, service_session
from meterhub.devices.models import Meter
from meterhub.timeseries.ingest import Reading
from tests.collector.conftest import poller, start_bus, until
from tests.collector.test_commands_via_collector import PrepaidBus, _point
from tests.collector.test_service import Running, _collector, _wait


def _engine(app):
    with app.app_context():
        return service_engine()


def test_epochs_grow_one_holder_at_a_time_release_keeps_the_epoch(app, group):
    engine, gid = _engine(app), group.gateway_id
    with engine.begin() as c:
        assert leases.acquire(c, "a", [gid], 30) == {gid: 1}
        assert leases.acquire(c, "b", [gid], 30) == {}  # held and not expired
        assert leases.renew(c, "a", {gid: 1}, 30) == {gid: 1}
        assert leases.renew(c, "b", {gid: 1}, 30) == {}  # not b's
        assert leases.holder(c, gid) == ("a", 1)
        c.execute(text("UPDATE bus_leases SET expires_at = now() - interval '1 second' WHERE gateway_id = :g"),
                  {"g": gid})
    with engine.begin() as c:
        assert leases.renew(c, "a", {gid: 1}, 30) == {}  # lapsed: a must not believe it still holds it
        assert leases.acquire(c, "b", [gid], 30) == {gid: 2}
        assert leases.stale_gateways(c, [leases.Fence(gid, "a", 1)]) == {gid}
        assert leases.stale_gateways(c, [leases.Fence(gid, "b", 2)]) == set()
        leases.release(c, "a", {gid: 1})  # a stale release changes nothing
        assert leases.holder(c, gid) == ("b", 2)
        leases.release(c, "b", {gid: 2})
        assert leases.holder(c, gid) is None
        assert c.execute(text("SELECT epoch FROM bus_leases WHERE gateway_id = :g"), {"g": gid}).scalar() == 2
        assert leases.acquire(c, "a", [gid], 30) == {gid: 3}
        # readings (not strict): a newer epoch of the same owner is not stale, another owner's is
        assert leases.stale_gateways(c, [leases.Fence(gid, "a", 2)], strict=False) == set()
        assert leases.stale_gateways(c, [leases.Fence(gid, "b", 2)], strict=False) == {gid}
        leases.release(c, "a", {gid: 3})


def test_rendezvous_spreads_evenly_and_moves_only_what_it_must():
    gateways = range(1, 3001)
    three = leases.assign(["a", "b", "c"], gateways)
    counts = {m: list(three.values()).count(m) for m in "abc"}
    assert all(800 < n < 1200 for n in counts.values()), counts
    two = leases.assign(["a", "c"], gateways)  # b left: only b's gateways move
    assert all(two[g] == three[g] for g in gateways if three[g] != "b")
    four = leases.assign(["a", "b", "c", "d"], gateways)  # d joined: it takes gateways, nobody else swaps
    moved = [g for g in gateways if four[g] != three[g]]
    assert all(four[g] == "d" for g in moved) and 550 < len(moved) < 950


def test_a_poller_stops_talking_when_its_lease_runs_out_and_resumes_when_renewed(run):
    async def go():
        server, proxy = await start_bus([1, 2])
        lease = leases.LocalLease(7, "me", 1, ttl_s=1.0, started=time.monotonic())
        bus = poller(proxy, [1, 2], NullSink(), interval_s=0.05, timeout_s=0.15)
        bus.lease = bus.port.lease = lease
        task = asyncio.create_task(bus.run())
        await until(lambda: bus.fenced == 1, timeout=5)
        assert lease.deadline < time.monotonic() + 0.15  # nothing was sent that could end after it
        last = proxy.requests[-1][0]
        assert last + 0.15 < lease.deadline + 0.05
        count = len(proxy.requests)
        await asyncio.sleep(0.5)
        assert len(proxy.requests) == count and proxy.connections == 0  # silent, connection closed
        lease.renewed(time.monotonic())
        await until(lambda: len(proxy.requests) > count, timeout=3)
        bus.stop()
        await task
        await proxy.down()
        await server.stop()

    run(go())


def test_readings_of_a_bus_granted_to_another_owner_are_refused(app, group):
    engine, gid = _engine(app), group.gateway_id
    with app.app_context(), service_session() as s:
        meter_id = s.execute(select(Meter.id).where(Meter.device_id == group.device_id)).scalar_one()
    with engine.begin() as c:
        epoch = leases.acquire(c, "collector:old", [gid], 30)[gid]
        c.execute(text("UPDATE bus_leases SET expires_at = now() WHERE gateway_id = :g"), {"g": gid})
        leases.acquire(c, "collector:new", [gid], 30)
    old = leases.Fence(gid, "collector:old", epoch)
    sink = StorageSink(engine)
    at = datetime(2026, 3, 1, tzinfo=UTC)
    sink.write(Pending(readings=[Reading(group.group_id, meter_id, at, {"energy_kwh": Decimal("5")})], fences=[old]))
    assert sink.stats.readings_refused == 1 and sink.stats.readings_stored == 0
    current = leases.Fence(gid, "collector:new", epoch + 1)
    sink.write(Pending(readings=[Reading(group.group_id, meter_id, at, {"energy_kwh": Decimal("5")})],
                       fences=[current]))
    assert sink.stats.readings_stored == 1
    with engine.begin() as c:
        leases.release(c, "collector:new", {gid: epoch + 1})


def test_a_command_result_of_a_stale_owner_is_not_confirmed(app, group, monkeypatch):
    """The collector switched the relay, but before the worker recorded it the bus was granted to another
    owner: the confirmation is refused by its epoch; the command goes back to queued and reads the meter first."""
    bus = PrepaidBus()
    real = worker._carry_out

    def carry_out_then_lose_the_bus(target, *args, **kwargs):
        outcome = real(target, *args, **kwargs)
        assert outcome.fences and not outcome.error, outcome
        with service_engine().begin() as c:
            c.execute(text("UPDATE bus_leases SET epoch = epoch + 1, owner = 'collector:other' "
                           "WHERE gateway_id = :g"), {"g": target.gateway.id})
        return outcome

    try:
        meter_id = _point(app, group, bus.server.port)
        with Running(_collector(app, group, interval_s=3600, lease_ttl_s=6)), app.app_context():
            _wait(lambda: leases_holder(app, group.gateway_id) is not None)
            monkeypatch.setattr(worker, "_carry_out", carry_out_then_lose_the_bus)
            with service_session() as s:
                command_id = create_command(s, s.get(Meter, meter_id), "switch", {"closed": False}).id
            state = worker.execute(command_id)
            assert not bus.sim.channel.relay_closed  # it did reach the meter ...
            assert state == "queued"  # ... but is not confirmed on a stale owner's word
            with service_session() as s:
                row = s.execute(text("SELECT state, verify_first, error FROM commands WHERE id = :c"),
                                {"c": command_id}).one()
            assert row.state == "queued" and row.verify_first and "lease" in row.error
    finally:
        bus.close()


def leases_holder(app, gateway_id: int):
    with service_engine().connect() as c:
        return leases.holder(c, gateway_id)


def test_a_dead_collector_of_this_host_is_dropped_and_its_leases_freed_at_once(app, group):
    import socket
    import subprocess

    engine, gid = _engine(app), group.gateway_id
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = f"collector:{socket.gethostname()}:{gone.pid}"
    elsewhere = f"collector:another-host:{gone.pid}"  # a process of another host is never judged from here
    with engine.begin() as c:
        for member in (dead, elsewhere):
            leases.heartbeat(c, member, shard=None, ttl_s=30)
        assert leases.acquire(c, dead, [gid], 30) == {gid: 1}
    with engine.begin() as c:
        live = leases.heartbeat(c, leases.member_id(), shard=None, ttl_s=30)
        assert dead not in live and elsewhere in live
        assert leases.acquire(c, leases.member_id(), [gid], 30) == {gid: 2}  # no TTL to wait out
        leases.release(c, leases.member_id(), {gid: 2})
        leases.leave(c, elsewhere)
        leases.leave(c, leases.member_id())
