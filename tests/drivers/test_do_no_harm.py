"""Real-meter rules (issue 17), checked against frames built by hand from REGISTERS.md — not by the driver's
encoder nor the simulator: a scripted responder answers exactly the bytes a sourced meter would, and records
every byte the driver sends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from meterhub.driver import DeviceRef
from meterhub.protocols.errors import CommandNotApplied, DeviceMismatch, UnsupportedCommand
from meterhub.simulator.model import SimClock
from meterhub.transports import open_transport
from tests.drivers.conftest import REGISTRY, bus_with, run
from tests.drivers.reference import crc16_modbus

WATER, ACREL, ADF = REGISTRY["water_valve"], REGISTRY["acrel_dtsd1352"], REGISTRY["acrel_adf300"]


def crc16(frame: bytes) -> bytes:
    """Modbus CRC-16 from its bitwise definition (tests/drivers/reference.py, not the driver's), low byte first."""
    crc = crc16_modbus(frame)
    return bytes([crc & 0xFF, crc >> 8])


def rtu(hex_pdu: str) -> bytes:
    body = bytes.fromhex(hex_pdu)
    return body + crc16(body)


class Scripted:
    """A TCP serial server whose meter answers a request only when it is byte for byte in ``script``."""

    def __init__(self, script: dict[bytes, bytes]) -> None:
        self.script, self.received, self.raw = dict(script), [], b""
        self.handlers: list[asyncio.Task | None] = []
        self.server: asyncio.AbstractServer | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handlers.append(asyncio.current_task())
        buf = b""
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            while chunk := await reader.read(256):
                buf += chunk
                self.raw += chunk
                for request, reply in self.script.items():
                    if buf.endswith(request):
                        self.received.append(request)
                        writer.write(reply)
                        await writer.drain()
                        buf = b""
                        break
                else:
                    if len(buf) > 64:
                        self.received.append(buf)
                        buf = b""
        writer.close()

    @contextlib.asynccontextmanager
    async def bus(self, framing: str) -> AsyncIterator[object]:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        client = open_transport("127.0.0.1", port, framing, timeout=0.3)
        try:
            yield client
        finally:
            await client.close()
            self.server.close()
            for task in self.handlers:
                if task is not None:
                    with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                        await asyncio.wait_for(task, 1.0)
            await self.server.wait_closed()


# --- Modbus valve water meter (REGISTERS.md §10 [P], Xintai) ---------------------------------------------
XINTAI = {"protocol": "modbus", "valve_profile": "xintai"}
CLOSE_0x1C = rtu("05 06 00 1C 00 02")          # FC06, register 0x001C, 2 = close
READ_0x1C = rtu("05 03 00 1C 00 01")           # FC03 read-back of the status bit field


def test_xintai_valve_close_is_fc06_to_0x001c_and_read_back():
    meter = Scripted({CLOSE_0x1C: CLOSE_0x1C, READ_0x1C: rtu("05 03 02 00 0A")})  # closed (0x02) + low battery

    async def go():
        async with meter.bus("rtu") as bus:
            await WATER.valve(bus, DeviceRef(5, WATER.validate_config(XINTAI)), 1, open=False)

    run(go())
    assert meter.received == [CLOSE_0x1C, READ_0x1C]


def test_a_valve_that_does_not_move_ends_not_applied():
    meter = Scripted({CLOSE_0x1C: CLOSE_0x1C, READ_0x1C: rtu("05 03 02 00 01")})  # still open

    async def go():
        async with meter.bus("rtu") as bus:
            await WATER.valve(bus, DeviceRef(5, WATER.validate_config(XINTAI)), 1, open=False)

    with pytest.raises(CommandNotApplied, match="reads its valve open"):
        run(go())


def test_no_valve_register_is_written_without_a_sourced_profile():
    meter = Scripted({})
    config = WATER.validate_config({"protocol": "modbus"})
    legacy = WATER.validate_config({"protocol": "modbus", "valve_kind": "register", "valve_address": 16,
                                    "valve_open_value": 1, "valve_close_value": 0})  # stored by older versions
    assert "valve" not in WATER.capabilities_for(config) and "valve" not in WATER.capabilities_for(legacy)
    assert all(s.address not in range(0x000F, 0x0012) for s in WATER.registers_for(legacy))

    async def go(cfg):
        async with meter.bus("rtu") as bus:
            await WATER.valve(bus, DeviceRef(5, cfg), 1, open=False)

    for cfg in (config, legacy):
        with pytest.raises(UnsupportedCommand, match="no valve profile"):
            run(go(cfg))
    assert meter.received == []


def test_custom_profile_needs_its_register_from_the_manual():
    import jsonschema

    with pytest.raises(jsonschema.ValidationError, match="valve_address"):
        WATER.validate_config({"protocol": "modbus", "valve_profile": "custom"})


# --- CJ/T 188 data-identifier byte order (REGISTERS.md §10 [K]) ------------------------------------------
ADDRESS = "00000012345678"
A_BCD = "78 56 34 12 00 00 00"  # address low byte first


def cjt(control: str, payload: str) -> bytes:
    body = bytes.fromhex(f"68 10 {A_BCD} {control}") + bytes([len(bytes.fromhex(payload))]) + bytes.fromhex(payload)
    return body + bytes([sum(body) & 0xFF, 0x16])


# 12345.67 m³, settlement 12000.00 m³, 2026-12-07 08:30:15, ST 00 00 (valve open under D0–D1)
DATA_901F = "67 45 23 01 2C 00 00 20 01 2C 15 30 08 07 12 26 20 00 00"


def test_901f_both_byte_orders_detected_and_stored():
    read_high = b"\xfe\xfe" + cjt("01", "90 1F 00")
    reply_high = b"\xfe\xfe" + cjt("81", f"90 1F 00 {DATA_901F}")
    meter = Scripted({read_high: reply_high})  # [K]-style firmware: answers only 90 1F
    device = DeviceRef(ADDRESS, WATER.validate_config({"protocol": "cjt188"}))

    async def go():
        async with meter.bus("cjt188") as bus:
            detected = await WATER.detect(bus, device)
            values = (await WATER.read(bus, DeviceRef(ADDRESS, WATER.validate_config(
                {"protocol": "cjt188", **detected}))))[0].values
            return detected, values

    detected, values = run(go())
    assert detected == {"di_order": "high_first"}
    assert values["water_m3"] == Decimal("12345.67") and values["valve_open"] is True
    assert meter.received == [read_high, read_high]
    assert meter.raw.startswith(b"\xfe\xfe" + cjt("01", "1F 90 00"))  # the configured order first, unanswered

    read_low = b"\xfe\xfe" + cjt("01", "1F 90 00")
    low = Scripted({read_low: b"\xfe\xfe" + cjt("81", f"1F 90 00 {DATA_901F}")})

    async def go_low():
        async with low.bus("cjt188") as bus:
            return await WATER.detect(bus, device)

    assert run(go_low()) == {"di_order": "low_first"}


@pytest.mark.parametrize(("convention", "st", "open_"), [("d0d1", "01 00", False), ("d0d1", "00 00", True),
                                                        ("bit6", "40 00", False), ("bit6", "00 00", True),
                                                        ("d0d1", "03 00", None)])
def test_valve_status_conventions(convention, st, open_):
    data = DATA_901F[: -len("00 00")] + st
    read = b"\xfe\xfe" + cjt("01", "1F 90 00")
    meter = Scripted({read: b"\xfe\xfe" + cjt("81", f"1F 90 00 {data}")})
    device = DeviceRef(ADDRESS, WATER.validate_config({"protocol": "cjt188", "st_convention": convention}))

    async def go():
        async with meter.bus("cjt188") as bus:
            return (await WATER.read(bus, device))[0].values

    assert run(go()).get("valve_open") is open_


# --- Acrel relay frames (REGISTERS.md §4) and platform-side keep-power (§10 [J]) --------------------------
CUT_OFF = bytes.fromhex("01 10 00 57 00 02 04 00 01 00 01 27 75")
RESTORE = bytes.fromhex("01 10 00 57 00 02 04 00 01 00 00 E6 B5")
WRITE_ECHO = rtu("01 10 00 57 00 02")
READ_STATE = rtu("01 03 02 24 00 01")  # summary block register 36 (0x0224): the status word (§2, §10)


def test_restore_and_cut_off_are_the_only_relay_frames_and_keep_power_is_never_reported():
    tripped = rtu("01 03 02 00 08")  # relays L1-L3 open, forced control
    closed = rtu("01 03 02 E0 08")   # relays L1-L3 closed, forced control
    config = ACREL.validate_config({"variant": "dtsy1352"})
    assert config["prepaid_mode"] == "platform"
    assert {"meter_side_prepaid", "prices"}.isdisjoint(ACREL.capabilities_for(config))
    device = DeviceRef(1, config)

    async def go(meter, action):
        async with meter.bus("rtu") as bus:
            await action(bus)

    off = Scripted({CUT_OFF: WRITE_ECHO, READ_STATE: tripped})
    run(go(off, lambda bus: ACREL.switch(bus, device, 1, closed=False)))
    assert off.received == [CUT_OFF, READ_STATE]

    kept = Scripted({RESTORE: WRITE_ECHO, READ_STATE: closed})
    run(go(kept, lambda bus: ACREL.keep_power(bus, device, 1, on=True)))
    assert kept.received == [RESTORE, READ_STATE]
    resumed = Scripted({})
    run(go(resumed, lambda bus: ACREL.keep_power(bus, device, 1, on=False)))
    assert resumed.received == []  # the platform's rule decides the relay again; nothing hands it to the meter

    automatic = ACREL.validate_config({"variant": "dtsy1352", "restore_mode": "automatic"})
    on = Scripted({RESTORE: WRITE_ECHO, READ_STATE: closed})
    run(go(on, lambda bus: ACREL.switch(bus, DeviceRef(1, automatic), 1, closed=True)))
    assert on.received == [RESTORE, READ_STATE]  # platform mode restores with [1, 0] whatever restore_mode says

    poll = Scripted({READ_STATE: closed})

    async def read_state():
        async with poll.bus("rtu") as bus:
            return await ACREL.read_specs(bus, 1, [s for s in ACREL.registers_for(config) if s.key == "sum_status"])

    from drivers.acrel_dtsd1352 import prepaid

    assert prepaid.relay_values(run(read_state()), config) == {"relay_closed": True}


def test_a_relay_that_stays_closed_after_cut_off_is_not_applied():
    meter = Scripted({CUT_OFF: WRITE_ECHO, READ_STATE: rtu("01 03 02 E0 00")})
    device = DeviceRef(1, ACREL.validate_config({"variant": "dtsy1352"}))

    async def go():
        async with meter.bus("rtu") as bus:
            await ACREL.switch(bus, device, 1, closed=False)

    with pytest.raises(CommandNotApplied, match="relay closed"):
        run(go())


def test_platform_mode_polls_no_money_so_no_purchase_counter_can_disagree():
    clock = SimClock(acceleration=0.0)
    for drv, address, config in ((ACREL, 2, {"variant": "dtsy1352"}), (ADF, 1, {"circuits": 12})):
        sim = drv.simulator(address, drv.validate_config(config), clock=clock)

        async def go(drv=drv, sim=sim, address=address, config=config):
            async with bus_with([sim], "rtu") as (_, bus):
                return await drv.read(bus, DeviceRef(address, drv.validate_config(config)))

        for reading in run(go()):
            assert {"purchase_count", "remaining_money", "keep_power"}.isdisjoint(reading.values)
            assert reading.values["relay_closed"] is True


# --- ADF300 circuit count coding (REGISTERS.md §10 [T]) ---------------------------------------------------
@pytest.mark.parametrize(("coding", "circuits"), [("count", 12), ("code", 12), ("code", 36), ("count", 24)])
def test_adf300_accepts_both_circuit_count_codings_and_records_which(coding, circuits):
    config = ADF.validate_config({"circuits": circuits, "circuit_coding": coding})
    sim = ADF.simulator(1, config, clock=SimClock(acceleration=0.0))
    plain = DeviceRef(1, ADF.validate_config({"circuits": circuits}))

    async def go():
        async with bus_with([sim], "rtu") as (_, bus):
            return await ADF.detect(bus, plain), await ADF.read_identity(bus, plain)

    detected, serial = run(go())
    assert detected == {"circuit_coding": coding} and serial == sim.serial


def test_adf300_refuses_a_circuit_register_it_cannot_read():
    from drivers.acrel_adf300 import circuit_count

    assert circuit_count(2, "box") == (12, "code") and circuit_count(0, "box") == (36, "code")
    with pytest.raises(DeviceMismatch, match="neither"):
        circuit_count(5, "box")


# --- the summary block 0x0200 x48 (REGISTERS.md §2 field order, §10) --------------------------------------
def test_meter_mode_reads_balance_count_and_relay_from_the_summary_block():
    words = [0] * 48
    words[0] = 7                                    # type code DDSY1352
    words[31:33] = [0x0001, 0x86A0]                 # remaining money 100000 x0.01 = 1000.00 CNY
    words[33] = 12                                  # purchase count
    words[36] = 0x2048                              # L1 closed, forced control, ALM1
    block = "".join(f"{w:04X}" for w in words[31:37])
    request = rtu("01 03 02 1F 00 06")              # registers 31..36 of the block, as the poll plans them
    meter = Scripted({request: rtu(f"01 03 0C {block}")})
    specs = [s for s in ACREL.registers_for(ACREL.validate_config({"variant": "ddsy1352"}))
             if s.key in ("sum_money", "sum_purchase_count", "sum_status")]

    async def go():
        async with meter.bus("rtu") as bus:
            return await ACREL.read_specs(bus, 1, specs)

    raw = run(go())
    from drivers.acrel_dtsd1352 import prepaid

    assert raw["sum_money"] == Decimal("1000.00") and raw["sum_purchase_count"] == 12
    assert prepaid.relay_values(raw, {"prepaid_mode": "meter"}) == {"relay_closed": True, "keep_power": True}
    assert prepaid.relay_values(raw, {}) == {"relay_closed": True}


@pytest.mark.parametrize(("drv", "address", "config"), [
    (ACREL, 3, {"variant": "ddsy1352", "prepaid_mode": "meter"}), (ACREL, 2, {"variant": "dtsy1352"}),
    (ADF, 1, {"circuits": 12, "prepaid_mode": "meter"})])
def test_simulators_serve_the_summary_block_consistently(drv, address, config):
    config = drv.validate_config(config)
    clock = SimClock(acceleration=0.0)
    sim = drv.simulator(address, config, clock=clock)
    specs = drv.registers_for(config)
    summary = [s for s in specs if s.key.startswith("sum_")]
    direct = [s for s in specs if s.key in ("energy_total", "purchase_count", "remaining_money")]

    async def go():
        async with bus_with([sim], "rtu") as (_, bus):
            clock.advance(3 * 3600)
            words = await bus.read_holding_registers(address, 0x0200, 48)  # the whole block in one read
            return len(words), await drv.read_specs(bus, address, summary), await drv.read_specs(bus, address, direct)

    count, s, d = run(go())
    assert count == 48 and s["sum_type"] in (5, 7, 10)
    assert s["sum_energy_total"] == d["energy_total"] > 0
    assert s["sum_money"] == d["remaining_money"] and s["sum_purchase_count"] == d["purchase_count"]
