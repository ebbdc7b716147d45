"""pymodbus's own client reads our simulators; values match the register map."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.framer import FramerType

from meterhub.driver import decode_block
from meterhub.simulator.model import SimClock
from meterhub.simulator.server import SimServer
from tests.drivers.conftest import REGISTRY, run

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


@pytest.mark.parametrize(("framing", "framer"), [("tcp", FramerType.SOCKET), ("rtu", FramerType.RTU)])
def test_pymodbus_reads_dtsd1352_simulator(framing, framer):
    drv = REGISTRY["acrel_dtsd1352"]
    clock = SimClock(acceleration=0.0)
    sim = drv.simulator(5, {"variant": "dtsd1352"}, clock=clock)
    clock.advance(3600)

    async def go():
        server = await SimServer([sim], framing=framing).start()
        client = AsyncModbusTcpClient("127.0.0.1", port=server.port, framer=framer, timeout=2, retries=0)
        try:
            assert await client.connect()
            rr = await client.read_holding_registers(0x0000, count=10, device_id=5)
            assert not rr.isError()
            energy = client.convert_from_registers(rr.registers[0:2], data_type=client.DATATYPE.UINT32,
                                                   word_order="big")
            expected = decode_block(drv.registers, 0, sim.read_registers(5, 0, 10))
            assert Decimal(energy) * Decimal("0.01") == expected["energy_total"] > 0
            rr = await client.read_holding_registers(0x016A, count=2, device_id=5)
            power = client.convert_from_registers(rr.registers, data_type=client.DATATYPE.INT32, word_order="big")
            assert float(Decimal(power) * Decimal("0.001")) == pytest.approx(sim.channel.power_kw, abs=0.002)
            rr = await client.read_holding_registers(0x0061, count=1, device_id=5)
            assert rr.registers[0] == 2200  # 220.0 V
        finally:
            client.close()
            await server.stop()

    run(go())


def test_pymodbus_switches_prepaid_meter():
    drv = REGISTRY["acrel_dtsd1352"]
    sim = drv.simulator(1, {"variant": "dtsy1352"}, clock=SimClock(acceleration=0.0))

    async def go():
        server = await SimServer([sim], framing="rtu").start()
        client = AsyncModbusTcpClient("127.0.0.1", port=server.port, framer=FramerType.RTU, timeout=2, retries=0)
        try:
            assert await client.connect()
            wr = await client.write_registers(0x0057, [1, 1], device_id=1)
            assert not wr.isError()
            assert sim.channel.relay_closed is False
        finally:
            client.close()
            await server.stop()

    run(go())
