"""Fault injection and line timing through our transports: the right typed errors, no hangs."""

from __future__ import annotations

import time
from datetime import datetime
from decimal import Decimal

import pytest

from meterhub.driver import DeviceRef
from meterhub.protocols.errors import CrcError, DeviceTimeout, FrameError, ModbusExceptionReply
from meterhub.simulator.model import SimClock
from meterhub.simulator.server import Faults, LineTiming
from meterhub.transports import ModbusClient
from tests.drivers.conftest import REGISTRY, bus_with, run

DTSD = REGISTRY["acrel_dtsd1352"]


def sims(*ids, variant="dtsd1352"):
    clock = SimClock(acceleration=0.0)
    return [DTSD.simulator(i, {"variant": variant}, clock=clock) for i in ids]


@pytest.mark.parametrize("framing", ["rtu", "tcp"])
@pytest.mark.parametrize("code", [1, 2, 3, 4])
def test_exception_replies(framing, code):
    async def go():
        async with bus_with(sims(1), framing, faults=Faults(forced_exception={1: code})) as (_, bus):
            with pytest.raises(ModbusExceptionReply) as exc:
                await bus.read_holding_registers(1, 0, 2)
            assert exc.value.code == code and exc.value.retryable == (code == 4)
            assert f"{code:02X}" in str(exc.value) and "unit 1" in str(exc.value)

    run(go())


def test_real_illegal_address_from_device_map():
    async def go():
        async with bus_with(sims(1), "rtu") as (_, bus):
            with pytest.raises(ModbusExceptionReply) as exc:
                await bus.read_holding_registers(1, 0x4000, 2)
            assert exc.value.code == 2
            with pytest.raises(ModbusExceptionReply):  # read-only register
                await bus.write_registers(1, 0x0000, [0, 0])

    run(go())


@pytest.mark.parametrize("framing", ["rtu", "tcp"])
def test_timeout_and_dead_device_then_recovery(framing):
    async def go():
        async with bus_with(sims(1, 2), framing, faults=Faults(dead={2}), timeout=0.15) as (_, bus):
            with pytest.raises(DeviceTimeout, match="unit 2"):
                await bus.read_holding_registers(2, 0, 2)
            assert len(await bus.read_holding_registers(1, 0, 2)) == 2  # the bus is still usable
            with pytest.raises(DeviceTimeout):
                await bus.read_holding_registers(9, 0, 2)  # nobody at id 9

    run(go())


def test_probabilistic_timeouts_are_typed():
    async def go():
        async with bus_with(sims(1), "rtu", faults=Faults(timeout=0.5, seed=3), timeout=0.1) as (_, bus):
            outcomes = []
            for _ in range(10):
                try:
                    await bus.read_holding_registers(1, 0, 2)
                    outcomes.append("ok")
                except DeviceTimeout:
                    outcomes.append("timeout")
            assert {"ok", "timeout"} <= set(outcomes)

    run(go())


def test_crc_error():
    async def go():
        async with bus_with(sims(1), "rtu", faults=Faults(crc_error=1.0)) as (_, bus):
            with pytest.raises(CrcError, match="CRC"):
                await bus.read_holding_registers(1, 0, 2)

    run(go())


def test_cjt188_dead_meter_and_bad_checksum():
    water = REGISTRY["water_valve"]
    config = water.validate_config({})
    device = DeviceRef("12345678", config)

    async def go():
        sim = water.simulator("12345678", config, clock=SimClock(acceleration=0))
        async with bus_with([sim], "cjt188", faults=Faults(crc_error=1.0)) as (_, bus):
            with pytest.raises(CrcError):
                await water.read(bus, device)
        async with bus_with([sim], "cjt188", faults=Faults(dead={"12345678"}), timeout=0.1) as (_, bus):
            with pytest.raises(DeviceTimeout):
                await water.read(bus, device)

    run(go())


def test_wrong_unit_reply_is_frame_error():
    """A reply from another unit (two masters, crossed wires) is rejected."""
    async def go():
        import asyncio

        from meterhub.protocols import modbus as mb

        done = asyncio.Event()

        async def fake(reader, writer):
            await reader.readexactly(8)
            writer.write(mb.rtu_frame(7, bytes([3, 4, 0, 1, 0, 2])))
            await writer.drain()
            await reader.read()  # until the client hangs up
            writer.close()
            await writer.wait_closed()
            done.set()

        server = await asyncio.start_server(fake, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with ModbusClient("127.0.0.1", port, framing="rtu", timeout=0.5) as bus:
            with pytest.raises(FrameError, match="expected 1"):
                await bus.read_holding_registers(1, 0, 2)
        await asyncio.wait_for(done.wait(), 2)
        server.close()
        await server.wait_closed()

    run(go())


def test_line_timing_serialises_the_bus():
    """40 registers at 9600 baud with 10 ms turnaround take ~124.6 ms; two clients share one bus."""
    line = LineTiming(9600, turnaround=0.010)
    assert line.transaction_time(8, 5 + 2 * 40) == pytest.approx(0.1246, abs=0.001)
    assert LineTiming(38400).t35 == 0.00175

    async def go():
        import asyncio

        async with bus_with(sims(1, 2), "rtu", line=line, timeout=2.0) as (server, bus):
            other = ModbusClient("127.0.0.1", server.port, framing="rtu", timeout=2.0)
            start = time.monotonic()
            await asyncio.gather(bus.read_holding_registers(1, 0, 40), other.read_holding_registers(2, 0, 40))
            elapsed = time.monotonic() - start
            await other.close()
            assert elapsed >= 2 * 0.124  # one transaction at a time on the bus

    run(go())


def test_prepaid_meter_trips_at_zero_and_topup_restores():
    # A fixed morning start: 4 h over the day's load peak use far more than 5 CNY (a night start would not).
    clock = SimClock(start=datetime(2026, 3, 2, 8, 0), acceleration=0.0)
    meter_side = {"variant": "dtsy1352", "prepaid_mode": "meter"}
    sim = DTSD.simulator(4, meter_side, clock=clock, base_kw=10.0)
    sim.channel.remaining_money = Decimal("5.00")
    device = DeviceRef(4, DTSD.validate_config(meter_side))

    async def go():
        async with bus_with([sim], "rtu") as (_, bus):
            assert (await DTSD.read(bus, device))[0].values["relay_closed"] is True
            clock.advance(4 * 3600)
            values = (await DTSD.read(bus, device))[0].values
            assert values["relay_closed"] is False and values["remaining_money"] == 0
            with pytest.raises(ModbusExceptionReply) as exc:  # wrong purchase counter is refused
                await DTSD.write_topup(bus, device, 1, Decimal("100"), 5)
            assert exc.value.code == 3
            await DTSD.write_topup(bus, device, 1, Decimal("100"), 1)
            values = (await DTSD.read(bus, device))[0].values
            assert values["relay_closed"] is True and values["purchase_count"] == 1

    run(go())
