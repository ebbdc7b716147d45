"""Acrel 4G direct-connection frames (REGISTERS.md §10), built by hand here — start/end markers, Modbus CRC-16
over command + body low byte first, the summary block's field offsets — and parsed by meterhub's parser."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from meterhub.driver import DeviceRef
from meterhub.protocols import acrel4g
from meterhub.protocols.errors import CrcError, FrameError
from tests.drivers.conftest import REGISTRY
from tests.drivers.test_do_no_harm import crc16

ACREL = REGISTRY["acrel_dtsd1352"]


def frame(cmd: int, body: bytes) -> bytes:
    return b"\x7b\x7b" + bytes([cmd]) + body + crc16(bytes([cmd]) + body) + b"\x7d\x7d"


def summary_data() -> bytes:
    """96 bytes = the 48 registers of the summary block, offsets from §10."""
    data = bytearray(96)
    data[0:2] = (5).to_bytes(2, "big")                # register 0: type code 5 = DTSY1352
    data[42:46] = (123456).to_bytes(4, "big")         # bytes 42-45: total energy 1234.56 kWh
    data[46:50] = (10000).to_bytes(4, "big")          # sharp 100.00
    data[50:54] = (20000).to_bytes(4, "big")          # peak 200.00
    data[54:58] = (30000).to_bytes(4, "big")          # flat 300.00
    data[58:62] = (63456).to_bytes(4, "big")          # valley 634.56
    data[62:66] = (5000).to_bytes(4, "big")           # registers 31-32: remaining money 50.00
    data[66:68] = (7).to_bytes(2, "big")              # register 33: purchase count 7
    data[72:74] = bytes([0xE0, 0x40])                 # register 36: L1-L3 closed; ALM1
    data[80:87] = bytes([26, 12, 7, 1, 8, 30, 0])     # byte 80: time yy mm dd ww hh mm ss
    return bytes(data)


def upload_frame(serial: bytes = b"86012345678901234567") -> bytes:
    rtu = bytes([1, 3, 96]) + summary_data()
    body = serial.ljust(20, b"\x00") + b"[[1((" + rtu + crc16(rtu) + b"))]]"
    return frame(0x91, body)


def test_a_hand_built_upload_becomes_a_reading():
    parsed = acrel4g.decode(upload_frame())
    upload = acrel4g.parse_upload(parsed.body)
    assert (upload.serial, upload.meter_address, upload.unit) == ("86012345678901234567", "1", 1)
    device = DeviceRef("1", ACREL.validate_config({"variant": "dtsy1352"}))
    values = ACREL.decode_summary(device, upload.registers)[0].values
    assert values["energy_kwh"] == Decimal("1234.56") and values["energy_valley_kwh"] == Decimal("634.56")
    assert values["relay_closed"] is True and "remaining_money" not in values  # platform mode: no meter money
    meter_side = DeviceRef("1", ACREL.validate_config({"variant": "dtsy1352", "prepaid_mode": "meter"}))
    values = ACREL.decode_summary(meter_side, upload.registers)[0].values
    assert (values["remaining_money"], values["purchase_count"]) == (Decimal("50.00"), 7)


def test_encoder_matches_the_hand_built_frames():
    body = bytes(range(5))
    assert acrel4g.encode(0x94) == frame(0x94, b"")
    assert acrel4g.encode(0x90, body) == frame(0x90, body)
    registration = acrel4g.parse_register(acrel4g.register_body("86012345678901234567", "8986", 23, 15))
    assert (registration.serial, registration.iccid, registration.rssi, registration.interval_min) == (
        "86012345678901234567", "8986", 23, 15)


def test_time_sync_body_is_yy_mm_dd_ww_hh_mm_ss():
    from datetime import datetime

    assert acrel4g.time_sync_body(datetime(2026, 12, 6, 8, 30, 15)) == bytes([26, 12, 6, 0, 8, 30, 15])  # Sunday
    assert acrel4g.time_sync_body(datetime(2026, 12, 7, 23, 59, 59))[3] == 1


def test_stream_split_resync_and_bad_frames():
    good, heartbeat = upload_frame(), frame(0x94, b"")
    bad_crc = bytearray(frame(0x93, b"")); bad_crc[3] ^= 0xFF  # noqa: E702
    unknown = frame(0x55, b"\x01")
    stream = b"\x00\x11garbage" + heartbeat + bytes(bad_crc) + good + unknown + heartbeat
    buffer = acrel4g.FrameBuffer()
    out = []
    for i in range(0, len(stream), 7):  # arrives in pieces
        out += buffer.feed(stream[i:i + 7])
    frames = [o for o in out if isinstance(o, acrel4g.Frame)]
    errors = [o for o in out if isinstance(o, FrameError)]
    assert [f.cmd for f in frames] == [0x94, 0x91, 0x94]
    assert any(isinstance(e, CrcError) for e in errors)
    assert any(isinstance(e, acrel4g.UnknownCommand) for e in errors)
    assert any("outside a frame" in str(e) or "before a frame" in str(e) for e in errors)


def test_a_7d7d_inside_the_body_does_not_cut_the_frame():
    body = b"\x01\x7d\x7d\x02"
    assert [f.body for f in acrel4g.FrameBuffer().feed(frame(0x90, body))] == [body]


def test_an_endless_frame_is_dropped_at_the_limit():
    buffer = acrel4g.FrameBuffer(max_frame=64)
    out = buffer.feed(b"\x7b\x7b\x91" + b"\x00" * 200)
    assert any(isinstance(o, FrameError) for o in out) and len(buffer.buf) <= 64
    assert [f.cmd for f in buffer.feed(frame(0x94, b"")) if isinstance(f, acrel4g.Frame)] == [0x94]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_the_4g_parsers_raise_only_typed_errors(data):
    buffer = acrel4g.FrameBuffer(max_frame=256)
    for item in buffer.feed(data):
        assert isinstance(item, acrel4g.Frame | FrameError)
        if isinstance(item, acrel4g.Frame):
            for parse in (acrel4g.parse_register, acrel4g.parse_upload, acrel4g.parse_downlink_reply):
                try:
                    parse(item.body)
                except FrameError:
                    pass
    for parse in (acrel4g.parse_register, acrel4g.parse_upload, acrel4g.parse_downlink_reply):
        try:
            parse(data)
        except FrameError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([0x84, 0x90, 0x91, 0x93, 0x94]), st.binary(max_size=300))
def test_fuzz_valid_frames_with_any_body(cmd, body):
    items = acrel4g.FrameBuffer().feed(acrel4g.encode(cmd, body))
    assert any(isinstance(i, acrel4g.Frame) and i.body == body for i in items)
    for parse in (acrel4g.parse_register, acrel4g.parse_upload, acrel4g.parse_downlink_reply):
        try:
            parse(body)
        except FrameError:
            pass
