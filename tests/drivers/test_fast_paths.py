"""The collector's fast paths give exactly what the plain paths give, and the Protocol-based Modbus client
handles what a real gateway connection does: split frames, stale replies, late replies, hang-ups."""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterhub.aio import run_loop, uvloop_enabled
from meterhub.driver import DeviceRef, RegisterSpec, decode_block, encode_value, plan_blocks
from meterhub.protocols import modbus as mb
from meterhub.protocols.errors import DeviceTimeout, FrameError
from meterhub.simulator.device import _encode, _fit
from meterhub.simulator.model import SimClock
from meterhub.transports import ModbusClient
from tests.drivers.conftest import REGISTRY, bus_with, run
from tests.drivers.reference import crc16_modbus

DTSD = REGISTRY["acrel_dtsd1352"]
BLOCKS = [(key, b) for key, drv in sorted(REGISTRY.items()) for specs in drv.register_maps().values()
          for b in plan_blocks(specs)]


@given(st.binary(max_size=300))
def test_crc16_two_bytes_per_step_equals_the_bitwise_definition(data):
    assert mb.crc16(data) == crc16_modbus(data)


def test_crc16_known_vector():
    assert mb.rtu_frame(1, bytes.fromhex("0300000002"))[-2:] == bytes.fromhex("c40b")


@settings(max_examples=60)
@given(st.data())
def test_compiled_block_decoder_equals_decode_block(data):
    key, block = data.draw(st.sampled_from(BLOCKS))
    words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=block.count, max_size=block.count))
    try:
        expected = decode_block(block.specs, block.start, words)
    except Exception as err:  # noqa: BLE001 - the same error either way
        with pytest.raises(type(err)):
            block.decode(words)
        return
    got = block.decode(words)
    assert got == expected and {k: str(v) for k, v in got.items()} == {k: str(v) for k, v in expected.items()}


@settings(max_examples=300)
@given(st.sampled_from([("u16", 1), ("u32", 2), ("bits", 1), ("i16", 1), ("i32", 2)]),
       st.sampled_from(["1", "0.1", "0.01", "0.001", "10"]),
       st.one_of(st.booleans(), st.integers(-(1 << 34), 1 << 34),
                 st.decimals(min_value=-(10 ** 10), max_value=10 ** 10, places=4, allow_nan=False)))
def test_simulator_integer_encoder_equals_the_generic_one(kind, scale, value):
    spec = RegisterSpec("k", 0, kind[1], kind[0], Decimal(scale))
    try:
        expected = encode_value(spec, _fit(spec, value))
    except ValueError:
        with pytest.raises(ValueError):
            _encode(spec, value)
        return
    assert _encode(spec, value) == expected


def test_register_image_refreshes_with_the_clock_and_after_writes():
    clock = SimClock(start=datetime(2026, 3, 2, 10, 0), acceleration=0.0)
    sim = DTSD.simulator(3, {"variant": "dtsy1352"}, clock=clock)
    first = sim.read_registers(3, 0, 2)
    assert sim.read_registers(3, 0, 2) == first  # frozen clock: the same image
    clock.advance(3600)
    assert sim.read_registers(3, 0, 2) != first  # an hour of consumption shows at once
    config = DTSD.validate_config({"variant": "dtsy1352"})

    async def go():
        async with bus_with([sim], "rtu") as (_, bus):
            device = DeviceRef(3, config)
            assert (await DTSD.read(bus, device))[0].values["relay_closed"] is True
            await DTSD.switch(bus, device, 1, False)  # a write in the same device-second
            assert (await DTSD.read(bus, device))[0].values["relay_closed"] is False

    run(go())


def test_validated_configs_are_fresh_copies_and_changes_are_revalidated():
    config = {"variant": "dtsd1352", "pt": 10}
    first = DTSD.validate_config(config)
    first["pt"] = 99
    assert DTSD.validate_config(config)["pt"] == 10  # the cached copy was not touched
    config["pt"] = 20
    assert DTSD.validate_config(config)["pt"] == 20  # the same object, changed: seen again
    config["pt"] = "ten"
    with pytest.raises(jsonschema.ValidationError):
        DTSD.validate_config(config)


def test_run_loop_uses_uvloop_unless_turned_off(monkeypatch):
    pytest.importorskip("uvloop")

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert uvloop_enabled() and run_loop(loop_module()).startswith("uvloop")
    monkeypatch.setenv("METERHUB_UVLOOP", "0")
    assert not uvloop_enabled() and run_loop(loop_module()).startswith("asyncio")


async def _gateway(handler):
    """A fake gateway running ``handler(reader, writer)`` per connection until the client hangs up."""
    async def serve(reader, writer):
        try:
            await handler(reader, writer)
            await reader.read()  # until the client hangs up
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_reply_split_into_single_bytes_is_assembled():
    async def go():
        reply = mb.rtu_frame(1, bytes([3, 4, 0, 1, 0, 2]))

        async def trickle(reader, writer):
            while True:
                await reader.readexactly(8)
                for i in range(len(reply)):
                    writer.write(reply[i:i + 1])
                    await writer.drain()
                    await asyncio.sleep(0.002)

        server, port = await _gateway(trickle)
        async with ModbusClient("127.0.0.1", port, framing="rtu", timeout=0.5) as bus:
            assert await bus.read_holding_registers(1, 0, 2) == [1, 2]
            assert await bus.read_holding_registers(1, 0, 2) == [1, 2]
        server.close()

    run(go())


def test_stale_mbap_reply_is_skipped_and_late_rtu_reply_is_not_taken_for_the_next():
    async def go():
        async def stale_first(reader, writer):
            while True:
                header = await reader.readexactly(7)
                await reader.readexactly(int.from_bytes(header[4:6], "big") - 1)
                tid = int.from_bytes(header[:2], "big")
                writer.write(mb.mbap_frame(tid - 1, 1, bytes([3, 2, 0, 9])))  # a reply to an older request
                writer.write(mb.mbap_frame(tid, 1, bytes([3, 2, 0, 7])))

        server, port = await _gateway(stale_first)
        async with ModbusClient("127.0.0.1", port, framing="tcp", timeout=0.5) as bus:
            assert await bus.read_holding_registers(1, 0, 1) == [7]
        server.close()

        requests = 0

        async def late(reader, writer):
            nonlocal requests
            while True:
                await reader.readexactly(8)
                requests += 1
                if requests == 1:
                    await asyncio.sleep(0.3)  # after the client gave up
                writer.write(mb.rtu_frame(1, bytes([3, 2, 0, requests])))

        server, port = await _gateway(late)
        async with ModbusClient("127.0.0.1", port, framing="rtu", timeout=0.15) as bus:
            with pytest.raises(DeviceTimeout, match="no reply"):
                await bus.read_holding_registers(1, 0, 1)
            await asyncio.sleep(0.3)
            assert await bus.read_holding_registers(1, 0, 1) == [2]  # the late [1] went with the old link
        server.close()

    run(go())


def test_hang_up_mid_frame_and_garbage_function_code():
    async def go():
        async def hang_up(reader, writer):
            await reader.readexactly(8)
            writer.write(mb.rtu_frame(1, bytes([3, 4, 0, 1, 0, 2]))[:4])
            await writer.drain()
            writer.close()

        server, port = await _gateway(hang_up)
        async with ModbusClient("127.0.0.1", port, framing="rtu", timeout=0.5) as bus:
            with pytest.raises(DeviceTimeout, match="connection lost"):
                await bus.read_holding_registers(1, 0, 2)
        server.close()

        async def garbage(reader, writer):
            await reader.readexactly(8)
            writer.write(bytes([1, 0x2B, 0, 0, 0]))

        server, port = await _gateway(garbage)
        async with ModbusClient("127.0.0.1", port, framing="rtu", timeout=0.5) as bus:
            with pytest.raises(FrameError, match="unexpected function code 0x2B") as err:
                await bus.read_holding_registers(1, 0, 2)
            assert "unit 1" in str(err.value) and bus.connected  # RTU resynchronises on silence
        server.close()

    run(go())


def test_a_timeout_keeps_the_connection_and_a_late_reply_of_another_unit_is_skipped():
    """A dead meter costs its timeouts, not a reconnect per try: a late reply is told apart from the next one."""
    async def go():
        connections, seen = 0, []

        async def slow_unit_5(reader, writer):
            nonlocal connections
            connections += 1
            while True:
                request = await reader.readexactly(8)
                seen.append(request[0])
                if request[0] == 5:
                    continue  # answered late, below, after the client gave up and asked unit 1
                if seen[-2:] == [5, 1]:
                    writer.write(mb.rtu_frame(5, bytes([3, 2, 0, 55])))  # the late reply comes first
                writer.write(mb.rtu_frame(request[0], bytes([3, 2, 0, request[0]])))

        server, port = await _gateway(slow_unit_5)
        async with ModbusClient("127.0.0.1", port, framing="rtu", timeout=0.15) as bus:
            for _ in range(3):  # a dead meter's tries
                with pytest.raises(DeviceTimeout, match="unit 5"):
                    await bus.read_holding_registers(5, 0, 1)
            assert await bus.read_holding_registers(1, 0, 1) == [1]  # not [55]
            assert await bus.read_holding_registers(2, 0, 1) == [2]
        assert connections == 1
        server.close()

        async def mbap_late(reader, writer):
            nonlocal connections
            connections += 1
            held = None
            while True:
                header = await reader.readexactly(7)
                await reader.readexactly(int.from_bytes(header[4:6], "big") - 1)
                if held is None:
                    held = header  # the first request is answered only after the second one came
                    continue
                writer.write(mb.mbap_frame(int.from_bytes(held[:2], "big"), held[6], bytes([3, 2, 0, 9])))
                writer.write(mb.mbap_frame(int.from_bytes(header[:2], "big"), header[6], bytes([3, 2, 0, 7])))

        connections = 0
        server, port = await _gateway(mbap_late)
        async with ModbusClient("127.0.0.1", port, framing="tcp", timeout=0.15) as bus:
            with pytest.raises(DeviceTimeout):
                await bus.read_holding_registers(1, 0, 1)
            assert await bus.read_holding_registers(1, 0, 1) == [7]  # the late [9] has the older id
        assert connections == 1
        server.close()

    run(go())


def test_two_silent_units_in_a_row_close_the_connection():
    """A half-open connection (gateway gone without a FIN) answers nobody: reconnect rather than time out forever."""
    async def go():
        connections = 0

        async def mute(reader, writer):
            nonlocal connections
            connections += 1
            while True:
                await reader.readexactly(8)

        server, port = await _gateway(mute)
        async with ModbusClient("127.0.0.1", port, framing="rtu", timeout=0.1) as bus:
            for _ in range(2):
                with pytest.raises(DeviceTimeout):
                    await bus.read_holding_registers(1, 0, 1)
            assert bus.connected  # one meter silent: a dead meter, the line is fine
            with pytest.raises(DeviceTimeout):
                await bus.read_holding_registers(2, 0, 1)
            assert not bus.connected
            with pytest.raises(DeviceTimeout):
                await bus.read_holding_registers(3, 0, 1)
        assert connections == 2
        server.close()

    run(go())


def test_a_crc_error_keeps_the_rtu_connection_and_the_next_reply_is_clean():
    async def go():
        connections, count = 0, 0

        async def noisy(reader, writer):
            nonlocal connections, count
            connections += 1
            while True:
                await reader.readexactly(8)
                count += 1
                frame = bytearray(mb.rtu_frame(1, bytes([3, 2, 0, count])))
                if count == 1:
                    frame[-1] ^= 0x5A
                    frame += b"\x00\x17"  # and noise after it
                writer.write(bytes(frame))

        server, port = await _gateway(noisy)
        async with ModbusClient("127.0.0.1", port, framing="rtu", timeout=0.2) as bus:
            with pytest.raises(FrameError, match="CRC"):
                await bus.read_holding_registers(1, 0, 1)
            await asyncio.sleep(0.05)
            assert await bus.read_holding_registers(1, 0, 1) == [2]
        assert connections == 1
        server.close()

    run(go())
