"""Framers against the test vectors of REGISTERS.md, fixed register dumps, and fuzzing."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.acrel_dtsd1352.registers import DTSD1352
from meterhub.driver import decode_block, encode_value, plan_blocks
from meterhub.driver.registers import RegisterSpec
from meterhub.protocols import cjt188, dlt645
from meterhub.protocols import modbus as mb
from meterhub.protocols.errors import CrcError, DeviceError, FrameError, ModbusExceptionReply


def hx(text: str) -> bytes:
    return bytes.fromhex(text)


def test_acrel_relay_vectors():
    assert mb.rtu_frame(1, mb.write_request(0x57, [1, 1])) == hx("01 10 00 57 00 02 04 00 01 00 01 27 75")
    assert mb.rtu_frame(1, mb.write_request(0x57, [1, 0])) == hx("01 10 00 57 00 02 04 00 01 00 00 E6 B5")
    assert mb.rtu_split(hx("01 10 00 57 00 02 04 00 01 00 01 27 75")) == (1, hx("10 00 57 00 02 04 00 01 00 01"))


def test_rtu_bad_crc_and_length():
    with pytest.raises(CrcError, match="CRC"):
        mb.rtu_split(hx("01 10 00 57 00 02 04 00 01 00 01 27 76"))
    with pytest.raises(FrameError, match="too short"):
        mb.rtu_split(b"\x01\x03")
    with pytest.raises(FrameError, match="expected"):
        mb.parse_read_reply(hx("03 04 00 01"), 2)
    with pytest.raises(ModbusExceptionReply) as exc:
        mb.parse_read_reply(hx("83 02"), 2)
    assert exc.value.code == 2 and not exc.value.retryable
    assert ModbusExceptionReply(4).retryable and ModbusExceptionReply(6).retryable
    assert not ModbusExceptionReply(1).retryable


def test_cjt188_vectors():
    assert cjt188.encode(cjt188.read_request(), preamble=0) == hx("68 10 AA AA AA AA AA AA AA 01 03 1F 90 00 D1 16")
    close = hx("68 10 78 56 34 12 00 00 00 04 04 17 A0 01 99 E5 16")
    assert cjt188.encode(cjt188.valve_request("12345678", False, ser=1), preamble=0) == close
    frame = cjt188.decode(b"\xfe\xfe" + close)
    assert (frame.address, frame.control, frame.di, frame.ser, frame.data) == (
        "00000012345678", 4, 0xA017, 1, b"\x99")
    high_first = cjt188.encode(cjt188.read_request(), di_order="high_first", preamble=0)
    assert high_first[11:13] == hx("90 1F") and cjt188.decode(high_first, "high_first").di == 0x901F


def test_cjt188_meter_data_round_trip_and_errors():
    when = datetime(2026, 3, 4, 5, 6, 7)
    payload = cjt188.meter_data_payload(Decimal("1234.56"), Decimal("1000.00"), when, cjt188.ST_VALVE_CLOSED)
    data = cjt188.parse_meter_data(payload)
    assert (data.flow_m3, data.settlement_m3, data.clock, data.valve_open) == (
        Decimal("1234.56"), Decimal("1000.00"), when, False)
    bad = bytearray(cjt188.encode(cjt188.read_request(), preamble=0))
    bad[-2] ^= 1
    with pytest.raises(CrcError):
        cjt188.decode(bytes(bad))
    with pytest.raises(FrameError, match="truncated"):
        cjt188.decode(bytes(bad[:8]))
    with pytest.raises(FrameError, match="BCD"):
        cjt188.parse_meter_data(b"\xff" * 19)


def test_dlt645_vectors():
    read = dlt645.encode(dlt645.read_request("000000000001", 0x00010000))
    assert read == hx("FE FE FE FE 68 01 00 00 00 00 00 68 11 04 33 33 34 33 B3 16")
    trip = dlt645.relay_request("000000000001", dlt645.RELAY_TRIP, datetime(2026, 12, 31, 23, 59, 59))
    assert dlt645.encode(trip, preamble=0) == hx(
        "68 01 00 00 00 00 00 68 1C 10 35 33 33 33 33 33 33 33 4D 33 8C 8C 56 64 45 59 87 16")
    assert dlt645.decode(read) == dlt645.read_request("000000000001", 0x00010000)
    reply = dlt645.Dlt645Frame("000000000001", 0x91, (0x00010000).to_bytes(4, "little") + hx("56 34 12 00"))
    di, value = dlt645.parse_read_reply(dlt645.decode(dlt645.encode(reply)), 0x00010000)
    from meterhub.protocols.bcd import bcd_decimal

    assert di == 0x00010000 and bcd_decimal(value, 2) == Decimal("1234.56")
    with pytest.raises(dlt645.Dlt645ErrorReply, match="no such data"):
        dlt645.parse_read_reply(dlt645.Dlt645Frame("000000000001", 0xD1, b"\x02"))


def test_decode_fixed_dtsd1352_dump():
    """A register dump 0x0000-0x001F and 0x0164-0x017F decodes to the documented scaling."""
    dump = [0] * 32
    dump[0:2] = [0x0001, 0xE240]  # 123456 -> 1234.56 kWh
    dump[4:6] = [0x0000, 0x3039]  # peak 12345 -> 123.45
    values = decode_block(DTSD1352, 0, dump)
    assert values["energy_total"] == Decimal("1234.56") and values["energy_peak"] == Decimal("123.45")
    power = [0] * 28
    power[6:8] = [0xFFFF, 0xFC18]  # Pt = -1000 -> -1.000 kW
    power[0x1B] = 0x03B6  # PF total 950 -> 0.950
    values = decode_block(DTSD1352, 0x0164, power)
    assert values["p_total"] == Decimal("-1.000") and values["pf_total"] == Decimal("0.950")


@pytest.mark.parametrize("kind", ["f32_dcba", "f32_abcd", "f32_cdab", "f32_badc"])
def test_float_orders(kind):
    spec = RegisterSpec("flow", 1, 2, kind)
    words = encode_value(spec, Decimal("12.5"))
    assert decode_block([spec], 1, words)["flow"] == Decimal("12.5")
    if kind == "f32_dcba":
        assert words == [0x0000, 0x4841]  # 12.5 = 41 48 00 00 big-endian


def test_planner_respects_limits():
    specs = [RegisterSpec(f"r{i}", i * 3, 2, "u32") for i in range(100)]
    blocks = plan_blocks(specs, max_count=50, max_gap=1)
    assert all(b.count <= 50 for b in blocks)
    assert sum(len(b.specs) for b in blocks) == 100
    assert len(plan_blocks(specs, max_gap=0)) == 100


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_fuzz_parsers_raise_only_typed_errors(data):
    for parse in (mb.rtu_split, mb.mbap_split, cjt188.decode, dlt645.decode):
        try:
            parse(data)
        except (FrameError, CrcError):
            pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=2, max_size=40))
def test_fuzz_valid_checksum_frames(body):
    """Frames with a correct checksum but garbage inside still fail cleanly."""
    framed = [mb.rtu_frame(body[0], body[1:]), b"\x68" + body + bytes([(0x68 + sum(body)) & 0xFF, 0x16])]
    for data in framed:
        for parse in (mb.rtu_split, cjt188.decode, dlt645.decode):
            try:
                parse(data)
            except DeviceError:
                pass
        try:
            mb.parse_read_reply(data[1:-2], 2)
        except DeviceError:
            pass
