"""DL/T 645-2007 framing (encoding/decoding only; no driver uses it yet).

Frame: ``[FE×n] 68 A0..A5 68 C L DATA CS 16``; every DATA byte is sent +33H; CS = sum from the first 68
through the last DATA byte. Address: 12 BCD digits, low byte first.

Public API::

    Dlt645Frame(address, control, data)       # data without the +33H offset
    encode(frame, preamble=4) -> bytes
    decode(raw) -> Dlt645Frame                # FrameError / CrcError on bad input
    read_request(address, di) -> Dlt645Frame
    relay_request(address, action, expiry, password="02000000", operator="00000000") -> Dlt645Frame
    parse_read_reply(frame, expected_di=None) -> (di, value_bytes)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from meterhub.protocols.bcd import address_to_bcd, bcd_to_address, int_to_bcd
from meterhub.protocols.errors import CrcError, DeviceError, FrameError

READ = 0x11
RELAY = 0x1C
RELAY_TRIP, RELAY_CLOSE_ALLOWED, RELAY_CLOSE = 0x1A, 0x1B, 0x1C
KEEP_POWER, KEEP_POWER_RELEASE = 0x3A, 0x3B
ERROR_BITS = {
    0: "other error",
    1: "no such data",
    2: "password wrong / unauthorised",
    3: "baud rate not changeable",
    4: "year time zones exceeded",
    5: "daily periods exceeded",
    6: "tariff count exceeded",
}


@dataclass(frozen=True)
class Dlt645Frame:
    """One DL/T 645 frame; ``data`` is plain (the +33H offset is applied by encode/decode)."""

    address: str
    control: int
    data: bytes = b""


class Dlt645ErrorReply(DeviceError):
    """The meter answered with an abnormal reply (C bit 6); ``code`` is the error byte."""

    def __init__(self, code: int, where: str = "") -> None:
        self.code = code
        names = [name for bit, name in ERROR_BITS.items() if code >> bit & 1] or ["unknown"]
        super().__init__(f"DL/T 645 error reply {code:02X}: {', '.join(names)}", where)


def encode(frame: Dlt645Frame, preamble: int = 4) -> bytes:
    """Serialize a frame with ``preamble`` FE wake-up bytes."""
    if len(frame.data) > 200:
        raise ValueError("DL/T 645 data longer than 200 bytes")
    data = bytes((b + 0x33) & 0xFF for b in frame.data)
    body = b"\x68" + address_to_bcd(frame.address, 6) + b"\x68" + bytes([frame.control, len(data)]) + data
    return b"\xfe" * preamble + body + bytes([sum(body) & 0xFF, 0x16])


def frame_length(buf: bytes) -> int | None:
    """Length of the frame at the start of ``buf`` (preamble stripped); None if not known yet."""
    if not buf:
        return None
    if buf[0] != 0x68:
        raise FrameError(f"DL/T 645 frame must start with 68, got {buf[0]:02X}")
    return 12 + buf[9] if len(buf) >= 10 else None


def decode(raw: bytes) -> Dlt645Frame:
    """Parse and check one frame."""
    buf = bytes(raw).lstrip(b"\xfe")
    length = frame_length(buf)
    if length is None or len(buf) != length:
        raise FrameError(f"DL/T 645 frame length mismatch ({len(buf)} bytes): {bytes(raw[:32]).hex(' ')}")
    if buf[7] != 0x68:
        raise FrameError(f"DL/T 645 second start byte must be 68, got {buf[7]:02X}")
    if buf[-1] != 0x16:
        raise FrameError(f"DL/T 645 frame must end with 16, got {buf[-1]:02X}")
    if sum(buf[:-2]) & 0xFF != buf[-2]:
        raise CrcError(f"DL/T 645 checksum {buf[-2]:02X} != computed {sum(buf[:-2]) & 0xFF:02X}")
    data = bytes((b - 0x33) & 0xFF for b in buf[10:-2])
    return Dlt645Frame(bcd_to_address(buf[1:7]), buf[8], data)


def read_request(address: str, di: int) -> Dlt645Frame:
    """Read data identifier ``di`` (e.g. 0x00010000)."""
    return Dlt645Frame(address, READ, di.to_bytes(4, "little"))


def relay_request(
    address: str, action: int, expiry: datetime, password: str = "02000000", operator: str = "00000000"
) -> Dlt645Frame:
    """Relay/keep-power command (C=1C); ``password``: PA then P0 P1 P2 as 8 hex digits, wire order."""
    pa = bytes.fromhex(password)
    if len(pa) != 4:
        raise ValueError("password must be 8 hex digits: PA then P0 P1 P2")
    op = int_to_bcd(int(operator), 4)
    when = bytes(
        int_to_bcd(v, 1)[0]
        for v in (expiry.second, expiry.minute, expiry.hour, expiry.day, expiry.month, expiry.year % 100)
    )
    return Dlt645Frame(address, RELAY, pa + op + bytes([action, 0]) + when)


def parse_read_reply(frame: Dlt645Frame, expected_di: int | None = None) -> tuple[int, bytes]:
    """(DI, value bytes) from a read reply; raises Dlt645ErrorReply on an abnormal reply."""
    if frame.control & 0x40:
        raise Dlt645ErrorReply(frame.data[0] if frame.data else 0, frame.address)
    if frame.control & 0x1F not in (READ, 0x12) or not frame.control & 0x80:
        raise FrameError(f"not a read reply: C={frame.control:02X}", frame.address)
    if len(frame.data) < 4:
        raise FrameError("read reply without data identifier", frame.address)
    di = int.from_bytes(frame.data[:4], "little")
    if expected_di is not None and di != expected_di:
        raise FrameError(f"reply DI {di:08X} does not match request {expected_di:08X}", frame.address)
    return di, frame.data[4:]
