"""CJ/T 188-2004 framing (water/gas/heat meters), as used over a transparent TCP serial server.

Frame: ``[FE…] 68 T A0..A6 C L DI0 DI1 SER [data] CS 16``; CS = sum from 68 to the last data byte.

Public API::

    Cjt188Frame(meter_type, address, control, di, ser, data)
    encode(frame, di_order="low_first", preamble=2) -> bytes
    decode(raw, di_order="low_first") -> Cjt188Frame       # FrameError / CrcError on bad input
    frame_length(buf) -> int | None  # bytes needed for the frame at the start of buf (after preamble)
    read_request(address, ...) / valve_request(address, open_valve, ...) -> Cjt188Frame
    parse_meter_data(data) -> MeterData                    # the 901F reply payload
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from meterhub.protocols.bcd import address_to_bcd, bcd_decimal, bcd_to_address, bcd_to_int, int_to_bcd
from meterhub.protocols.errors import CrcError, FrameError

COLD_WATER = 0x10
WILDCARD_TYPE = 0xAA
BROADCAST = "AA" * 7
READ_DATA, READ_ADDRESS, WRITE_DATA = 0x01, 0x03, 0x04
DI_METER_DATA = 0x901F
DI_VALVE = 0xA017
VALVE_OPEN, VALVE_CLOSE, VALVE_EXERCISE, VALVE_HALF = 0x55, 0x99, 0xAA, 0x77
UNIT_M3, UNIT_L = 0x2C, 0x29
ST_VALVE_OPEN, ST_VALVE_CLOSED, ST_VALVE_FAULT = 0b00, 0b01, 0b11


@dataclass(frozen=True)
class Cjt188Frame:
    """One CJ/T 188 frame; ``data`` excludes DI and SER; ``di`` is None for frames with L < 3."""

    meter_type: int
    address: str
    control: int
    di: int | None
    ser: int = 0
    data: bytes = b""

    @property
    def is_reply(self) -> bool:
        return bool(self.control & 0x80)

    @property
    def is_error(self) -> bool:
        return bool(self.control & 0x40)


@dataclass(frozen=True)
class MeterData:
    """Decoded 901F payload."""

    flow_m3: Decimal
    settlement_m3: Decimal
    clock: datetime | None
    status: int
    valve_state: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "valve_state", self.status & 0x03)

    @property
    def valve_open(self) -> bool | None:
        return {ST_VALVE_OPEN: True, ST_VALVE_CLOSED: False}.get(self.valve_state)


def _di_bytes(di: int, di_order: str) -> bytes:
    raw = di.to_bytes(2, "big")
    return raw[::-1] if di_order == "low_first" else raw


def encode(frame: Cjt188Frame, di_order: str = "low_first", preamble: int = 2) -> bytes:
    """Serialize a frame (with ``preamble`` FE bytes)."""
    payload = b"" if frame.di is None else _di_bytes(frame.di, di_order) + bytes([frame.ser & 0xFF])
    payload += frame.data
    if len(payload) > 255:
        raise ValueError("CJ/T 188 payload longer than 255 bytes")
    body = bytes([0x68, frame.meter_type]) + address_to_bcd(frame.address, 7)
    body += bytes([frame.control, len(payload)]) + payload
    return b"\xfe" * preamble + body + bytes([sum(body) & 0xFF, 0x16])


def strip_preamble(buf: bytes) -> bytes:
    """Drop leading FE wake-up bytes."""
    i = 0
    while i < len(buf) and buf[i] == 0xFE:
        i += 1
    return buf[i:]


def frame_length(buf: bytes) -> int | None:
    """Length of the frame at the start of ``buf`` (preamble already stripped); None if unknown yet."""
    if not buf:
        return None
    if buf[0] != 0x68:
        raise FrameError(f"CJ/T 188 frame must start with 68, got {buf[0]:02X}")
    return 13 + buf[10] if len(buf) >= 11 else None


def decode(raw: bytes, di_order: str = "low_first") -> Cjt188Frame:
    """Parse and check one frame; raises FrameError (shape) or CrcError (checksum)."""
    buf = strip_preamble(bytes(raw))
    length = frame_length(buf)
    if length is None or len(buf) < length:
        raise FrameError(f"CJ/T 188 frame truncated ({len(buf)} bytes): {bytes(raw[:32]).hex(' ')}")
    if len(buf) != length:
        raise FrameError(f"CJ/T 188 frame has {len(buf) - length} trailing bytes")
    if buf[-1] != 0x16:
        raise FrameError(f"CJ/T 188 frame must end with 16, got {buf[-1]:02X}")
    if sum(buf[:-2]) & 0xFF != buf[-2]:
        raise CrcError(f"CJ/T 188 checksum {buf[-2]:02X} != computed {sum(buf[:-2]) & 0xFF:02X}")
    address = bcd_to_address(buf[2:9])
    control, payload = buf[9], buf[11:-2]
    if len(payload) < 3:
        return Cjt188Frame(buf[1], address, control, None, 0, payload)
    di_raw = payload[:2] if di_order == "low_first" else payload[1::-1]
    di = di_raw[0] | di_raw[1] << 8
    return Cjt188Frame(buf[1], address, control, di, payload[2], payload[3:])


def read_request(address: str = BROADCAST, meter_type: int = COLD_WATER, ser: int = 0) -> Cjt188Frame:
    """Request for 901F (current meter data)."""
    return Cjt188Frame(meter_type, address, READ_DATA, DI_METER_DATA, ser)


def valve_request(address: str, open_valve: bool, meter_type: int = COLD_WATER, ser: int = 0) -> Cjt188Frame:
    """Request for A017 valve open (55H) / close (99H)."""
    action = VALVE_OPEN if open_valve else VALVE_CLOSE
    return Cjt188Frame(meter_type, address, WRITE_DATA, DI_VALVE, ser, bytes([action]))


def encode_clock(when: datetime) -> bytes:
    """7-byte BCD real time: ss mm hh DD MM YYL YYH."""
    year = int_to_bcd(when.year, 2)
    return bytes(int_to_bcd(v, 1)[0] for v in (when.second, when.minute, when.hour, when.day, when.month)) + year


def meter_data_payload(flow_m3: Decimal, settlement_m3: Decimal, when: datetime, status: int) -> bytes:
    """901F reply payload (after DI/SER): flow, settlement flow, clock, ST."""
    flow = int_to_bcd(int(flow_m3 * 100) % 10**8, 4) + bytes([UNIT_M3])
    settle = int_to_bcd(int(settlement_m3 * 100) % 10**8, 4) + bytes([UNIT_M3])
    return flow + settle + encode_clock(when) + bytes([status & 0xFF, status >> 8 & 0xFF])


def parse_meter_data(data: bytes) -> MeterData:
    """Decode the 901F reply payload (19 bytes)."""
    if len(data) < 19:
        raise FrameError(f"901F payload has {len(data)} bytes, expected 19")

    def volume(chunk: bytes) -> Decimal:
        value = bcd_decimal(chunk[:4], 2)
        if chunk[4] == UNIT_L:
            return value / 1000
        if chunk[4] != UNIT_M3:
            raise FrameError(f"unknown CJ/T 188 volume unit {chunk[4]:02X}")
        return value

    try:
        t = data[10:17]
        parts = [bcd_to_int(t[i : i + 1]) for i in range(5)]
        clock = datetime(bcd_to_int(t[5:7]), parts[4], parts[3], parts[2], parts[1], parts[0])
    except (ValueError, FrameError):
        clock = None
    return MeterData(volume(data[0:5]), volume(data[5:10]), clock, data[17] | data[18] << 8)
