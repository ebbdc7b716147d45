"""The bus poller against simulated buses over TCP: one master, retries, quarantine, reconnects, read-now."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from meterhub.collector.bus import BusJob, NullSink
from meterhub.collector.policy import RetryPolicy
from meterhub.collector.port import BusPort
from meterhub.protocols.errors import DeviceTimeout, ModbusExceptionReply
from meterhub.simulator import Faults, LineTiming
from meterhub.transports import ModbusClient
from tests.collector.conftest import poller, start_bus, until


def test_one_outstanding_request_per_bus_with_jobs_and_faults(run):
    async def go():
        server, proxy = await start_bus([1, 2, 3, 4], faults=Faults(timeout=0.05, crc_error=0.05, seed=3))
        bus = poller(proxy, [1, 2, 3, 4], interval_s=0.0, quarantine_s=0.05)
        task = asyncio.create_task(bus.run())
        replies = []
        for i in range(30):  # read-now and commands from "other processes" while cycles run
            replies.append(bus.submit(BusJob("read", [101 + i % 4])))
            replies.append(bus.submit(BusJob("command", [102], "switch", {"closed": False})))
            await asyncio.sleep(0.02)
        results = await asyncio.gather(*replies)
        bus.stop()
        await task
        await proxy.down()
        await server.stop()
        assert len(proxy.requests) > 100
        assert proxy.overlaps == 0 and proxy.max_connections == 1
        assert any(r.get("ok") for r in results[::2])
        assert all(not r["ok"] and "cannot switch" in r["error"] for r in results[1::2])  # DTSD1352: no relay

    run(go())


def test_the_overlap_instrument_detects_two_masters(run):
    async def go():
        server, proxy = await start_bus([1, 2], line=LineTiming(9600, turnaround=0.02))
        a, b = ModbusClient("127.0.0.1", proxy.port, "rtu"), ModbusClient("127.0.0.1", proxy.port, "rtu")
        await asyncio.gather(a.read_holding_registers(1, 0, 10), b.read_holding_registers(2, 0, 10))
        await a.close(), await b.close()
        await proxy.down()
        await server.stop()
        assert proxy.overlaps == 1 and proxy.max_connections == 2

    run(go())


@pytest.mark.parametrize("code, tries", [(1, 1), (2, 1), (3, 1), (4, 3), (6, 3)])
def test_modbus_exceptions_retried_only_for_04_and_06(run, code, tries):
    async def go():
        server, proxy = await start_bus([1], faults=Faults(forced_exception={1: code}))
        port = BusPort(ModbusClient("127.0.0.1", proxy.port, "rtu"), RetryPolicy(retries=2, backoff_s=0.01))
        with pytest.raises(ModbusExceptionReply):
            await port.read_holding_registers(1, 0, 2)
        await port.close()
        await proxy.down()
        await server.stop()
        assert len(proxy.requests) == tries
        assert port.device_faults == tries and port.stats.retries == tries - 1

    run(go())


def test_timeouts_retried_with_growing_backoff_then_recovery(run):
    async def go():
        server, proxy = await start_bus([1], faults=Faults(dead={1}))
        port = BusPort(ModbusClient("127.0.0.1", proxy.port, "rtu"), RetryPolicy(retries=3, backoff_s=0.1, jitter=0),
                       timeout_s=0.1)
        with pytest.raises(DeviceTimeout):
            await port.read_holding_registers(1, 0, 2)
        times = [t for t, _ in proxy.requests]
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert len(times) == 4  # 1 + 3 retries
        assert gaps[0] == pytest.approx(0.1 + 0.1, abs=0.05)  # timeout + backoff 0.1
        assert gaps[1] == pytest.approx(0.1 + 0.2, abs=0.05)  # timeout + backoff 0.2
        assert gaps[2] == pytest.approx(0.1 + 0.4, abs=0.05)
        server.faults.dead.clear()
        assert len(await port.read_holding_registers(1, 0, 2)) == 2  # answers again after the timeouts
        await port.close()
        await proxy.down()
        await server.stop()

    run(go())


def test_dead_device_is_quarantined_and_does_not_stall_the_bus(run):
    async def go():
        server, proxy = await start_bus([1, 2, 3], faults=Faults(dead={2}))
        sink = NullSink()
        bus = poller(proxy, [1, 2, 3], sink, interval_s=0.1, timeout_s=0.1, quarantine_s=30)
        task = asyncio.create_task(bus.run())
        await until(lambda: len(sink.reports) >= 6)
        bus.stop()
        await task
        await proxy.down()
        await server.stop()
        units = proxy.units()
        assert units.count(2) == 3  # one read, two retries, then skipped for 30 s
        assert [r.skipped for r in sink.reports[1:6]] == [1] * 5
        assert all(r.read == 2 and r.duration_s < 0.1 for r in sink.reports[1:6])
        assert sink.reports[0].failed == 1 and sink.reports[0].read == 2

    run(go())


def test_quarantine_grows_and_ends_when_the_device_answers(run):
    async def go():
        server, proxy = await start_bus([1, 2], faults=Faults(dead={2}))
        sink = NullSink()
        bus = poller(proxy, [1, 2], sink, interval_s=1.0, timeout_s=0.05, quarantine_s=0.3, retries=0)
        task = asyncio.create_task(bus.run())
        await until(lambda: bus.quarantine.failures(2) >= 2, timeout=3)
        assert bus.quarantine.entries[2].until - time.monotonic() > 0.35  # second span 0.6 s
        server.faults.dead.clear()
        await until(lambda: bus.quarantine.failures(2) == 0, timeout=3)
        bus.stop()
        await task
        await proxy.down()
        await server.stop()

    run(go())


def test_reconnect_after_gateway_down_and_back(run, caplog):
    async def go():
        server, proxy = await start_bus([1, 2])
        sink = NullSink()
        bus = poller(proxy, [1, 2], sink, interval_s=0.05)
        task = asyncio.create_task(bus.run())
        await until(lambda: sink.ok >= 4)
        await proxy.down()
        await until(lambda: bus.down and sink.gateway_faults >= 3)
        reply = await asyncio.wait_for(bus.submit(BusJob("read", [101])), 1.0)  # fails fast while down
        assert not reply["ok"] and "unreachable" in reply["error"]
        before = sink.ok
        await proxy.up()
        await until(lambda: sink.ok >= before + 4 and not bus.down)
        assert bus.quarantine.count(time.monotonic()) == 0  # the gateway's outage is not the devices' fault
        bus.stop()
        await task
        await proxy.down()
        await server.stop()

    with caplog.at_level(logging.INFO, "meterhub.collector"):
        run(go())
    assert "gateway unreachable" in caplog.text and "reachable again" in caplog.text


def test_flapping_gateway_keeps_one_master_and_recovers(run):
    async def go():
        server, proxy = await start_bus([1, 2, 3])
        sink = NullSink()
        bus = poller(proxy, [1, 2, 3], sink, interval_s=0.02, quarantine_s=0.05)
        task = asyncio.create_task(bus.run())
        for _ in range(6):
            await asyncio.sleep(0.12)
            await proxy.down()
            await asyncio.sleep(0.08)
            await proxy.up()
        before = sink.ok
        await until(lambda: sink.ok >= before + 9 and not bus.down)
        assert not task.done()
        bus.stop()
        await task
        await proxy.down()
        await server.stop()
        assert proxy.overlaps == 0 and proxy.max_connections == 1
        assert sink.gateway_faults >= 1

    run(go())


def test_slow_device_is_read_and_too_slow_device_is_quarantined(run):
    async def go():
        server, proxy = await start_bus([1, 2, 3])
        proxy.delay = {2: 0.08, 3: 0.5}  # within / beyond the 0.15 s timeout
        sink = NullSink()
        bus = poller(proxy, [1, 2, 3], sink, interval_s=0.05, timeout_s=0.15)
        task = asyncio.create_task(bus.run())
        await until(lambda: len(sink.reports) >= 4)
        bus.stop()
        await task
        await proxy.down()
        await server.stop()
        assert all(r.read == 2 for r in sink.reports[:4])
        assert [r.skipped for r in sink.reports[1:4]] == [1, 1, 1]

    run(go())


def test_read_now_overtakes_a_running_cycle(run):
    async def go():
        ids = list(range(1, 9))
        server, proxy = await start_bus(ids, line=LineTiming(9600, turnaround=0.02))
        sink = NullSink()
        bus = poller(proxy, ids, sink, interval_s=3600, timeout_s=0.5)
        task = asyncio.create_task(bus.run())
        await until(lambda: sink.outcomes >= 1)  # the first cycle (about 3 s at 9600 baud) is running
        start = time.monotonic()
        reply = await bus.submit(BusJob("read", [108]))
        elapsed = time.monotonic() - start
        assert reply["ok"] and "energy_kwh" in reply["meters"]["108"]["values"]
        assert elapsed < 1.0 and sink.outcomes < 6  # answered between two devices, not after the cycle
        bus.stop()
        await task
        await proxy.down()
        await server.stop()

    run(go())


def test_cycle_overrun_raises_the_alarm(run, caplog):
    async def go():
        server, proxy = await start_bus([1, 2, 3], line=LineTiming(9600, turnaround=0.02))
        sink = NullSink()
        bus = poller(proxy, [1, 2, 3], sink, interval_s=0.3, timeout_s=0.5)
        task = asyncio.create_task(bus.run())
        await until(lambda: len(sink.reports) >= 2)
        bus.stop()
        await task
        await proxy.down()
        await server.stop()
        assert sink.reports[0].overrun and bus.overruns >= 2
        assert sink.reports[0].duration_s > 0.3

    with caplog.at_level(logging.WARNING, "meterhub.collector"):
        run(go())
    assert "longer than its" in caplog.text
