"""Acrel 4G direct connection: the meter dials a TCP server (REGISTERS.md §10, sources [J] and [G]).

Frame: ``7B 7B | cmd | body | CRC16 | 7D 7D``; the CRC is Modbus CRC-16 over cmd + body, low byte first.

    0x84 register   meter -> server: serial (20 bytes ASCII, NUL padded), ICCID (30), RSSI (1),
                    firmware 3 x 2 bytes BCD, report interval (1 byte, minutes)
    0x94 heartbeat  meter -> server: no reply
    0x93 time sync  meter asks, server answers yy mm dd ww hh mm ss (ww: Sunday = 0)
    0x91 upload     meter -> server: [serial (20)] "[[" meter address "((" Modbus RTU reply of the 48-register
                    summary block "))" "]]"; the server acknowledges with an empty 0x91 after storing it
    0x90 downlink   server -> meter: a Modbus RTU request; meter -> server: [serial (20)] + the RTU reply

Public API::

    encode(cmd, body) -> bytes
    FrameBuffer(max_frame).feed(data) -> list[Frame | FrameError]   # splits a byte stream, resynchronises
    parse_register(body) -> Registration; parse_upload(body) -> Upload; parse_downlink_reply(body) -> bytes
    time_sync_body(when) -> bytes
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from meterhub.protocols import modbus as mb
from meterhub.protocols.errors import CrcError, FrameError

START, END = b"\x7b\x7b", b"\x7d\x7d"
DOWNLINK, UPLOAD, TIME_SYNC, REGISTER, HEARTBEAT = 0x90, 0x91, 0x93, 0x84, 0x94
KNOWN = frozenset({DOWNLINK, UPLOAD, TIME_SYNC, REGISTER, HEARTBEAT})
SERIAL_LEN, ICCID_LEN = 20, 30
REGISTER_LEN = SERIAL_LEN + ICCID_LEN + 1 + 6 + 1
SUMMARY_BYTES = 96  # 48 registers
MAX_FRAME = 1024


@dataclass(frozen=True)
class Frame:
    """One checked frame."""

    cmd: int
    body: bytes


@dataclass(frozen=True)
class Registration:
    serial: str
    iccid: str
    rssi: int
    firmware: tuple[str, str, str]
    interval_min: int


@dataclass(frozen=True)
class Upload:
    serial: str            # "" when the meter sent none (the session's registration names it)
    meter_address: str
    unit: int
    registers: list[int] = field(default_factory=list)


def encode(cmd: int, body: bytes = b"") -> bytes:
    """A frame with start, CRC (low byte first) and end."""
    crc = mb.crc16(bytes([cmd]) + body)
    return START + bytes([cmd]) + body + bytes([crc & 0xFF, crc >> 8]) + END


def decode(frame: bytes) -> Frame:
    """Check one delimited frame; CrcError or FrameError."""
    if len(frame) < 7 or not frame.startswith(START) or not frame.endswith(END):
        raise FrameError(f"4G frame must be 7B 7B … 7D 7D of at least 7 bytes, got {frame[:16].hex(' ')}")
    cmd, body, crc = frame[2], frame[3:-4], frame[-4] | frame[-3] << 8
    if mb.crc16(bytes([cmd]) + body) != crc:
        raise CrcError(f"4G frame CRC {crc:04X} does not match (cmd {cmd:02X}, {len(body)} body bytes)")
    if cmd not in KNOWN:
        raise UnknownCommand(f"unknown 4G command {cmd:02X}")
    return Frame(cmd, body)


class UnknownCommand(FrameError):
    """A well-formed frame (CRC right) with a command this listener does not handle."""


class FrameBuffer:
    """Splits a TCP byte stream into frames. A 7D 7D inside a binary body ends a candidate whose CRC fails;
    the candidate then grows to the next 7D 7D (up to ``max_frame``). Bytes outside frames are dropped and
    reported, so a listener can count them."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame, self.buf = max_frame, bytearray()

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        """Frames completed by ``data``, and an error for each piece of the stream that was dropped."""
        self.buf += data
        out: list[Frame | FrameError] = []
        while True:
            start = self.buf.find(START)
            if start < 0:
                keep = 1 if self.buf.endswith(b"\x7b") else 0
                if len(self.buf) > keep:
                    out.append(FrameError(f"{len(self.buf) - keep} bytes outside a frame dropped"))
                    del self.buf[: len(self.buf) - keep]
                return out
            if start:
                out.append(FrameError(f"{start} bytes before a frame start dropped"))
                del self.buf[:start]
            taken = self._take()
            if taken is None:
                return out
            out.append(taken)

    def _take(self) -> Frame | FrameError | None:
        """The frame at the start of the buffer, an error for dropped bytes, or None: wait for more."""
        first_end, end = self.buf.find(END, 3), self.buf.find(END, 3)
        error: FrameError | None = None
        while 0 <= end and end + 2 <= self.max_frame:
            try:
                frame = decode(bytes(self.buf[: end + 2]))
            except UnknownCommand as err:
                del self.buf[: end + 2]
                return err
            except FrameError as err:  # CRC or too short: maybe a 7D 7D inside the body; try the next end
                error = error or err
                end = self.buf.find(END, end + 1)
                continue
            del self.buf[: end + 2]
            return frame
        too_long = len(self.buf) > self.max_frame
        if first_end < 0:
            if too_long:
                del self.buf[:2]
                return FrameError(f"no frame end within {self.max_frame} bytes; dropped")
            return None
        if too_long or self.buf.find(START, first_end) > 0:  # a new frame began: this one is broken
            del self.buf[: first_end + 2]
            return error or FrameError("broken 4G frame dropped")
        return None


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("ascii", "replace").strip()


def _bcd(byte: int) -> str:
    return f"{byte >> 4}{byte & 0x0F}"


def parse_register(body: bytes) -> Registration:
    """The 0x84 body."""
    if len(body) < REGISTER_LEN:
        raise FrameError(f"4G registration has {len(body)} bytes, expected {REGISTER_LEN}")
    serial = _text(body[:SERIAL_LEN])
    if not serial or not serial.isprintable():
        raise FrameError("4G registration without a readable serial number")
    rest = body[SERIAL_LEN + ICCID_LEN:]
    firmware = tuple(_bcd(rest[1 + 2 * i]) + _bcd(rest[2 + 2 * i]) for i in range(3))
    return Registration(serial, _text(body[SERIAL_LEN:SERIAL_LEN + ICCID_LEN]), rest[0],
                        firmware, rest[7])  # type: ignore[arg-type]


def _serial_prefix(body: bytes, marker: bytes) -> tuple[str, int]:
    """A leading 20-byte serial when the body does not start with ``marker``."""
    if body.startswith(marker):
        return "", 0
    if len(body) < SERIAL_LEN:
        raise FrameError("4G body too short for its serial number")
    return _text(body[:SERIAL_LEN]), SERIAL_LEN


def parse_upload(body: bytes) -> Upload:
    """The 0x91 body: the summary block as 48 registers."""
    serial, at = _serial_prefix(body, b"[[")
    start = body.find(b"[[", at)
    mod = body.find(b"((", start + 2) if start >= 0 else -1
    if start < 0 or mod < 0:
        raise FrameError("4G upload without its [[ address (( section")
    address = body[start + 2:mod].decode("ascii", "replace").strip()
    rtu_start = mod + 2
    if len(body) < rtu_start + 3:
        raise FrameError("4G upload section too short")
    count = body[rtu_start + 2]
    rtu = body[rtu_start:rtu_start + 3 + count + 2]
    tail = body[rtu_start + len(rtu):]
    if len(rtu) != 3 + count + 2 or not tail.startswith(b"))") or b"]]" not in tail:
        raise FrameError("4G upload: Modbus data does not end with )) ]]")
    unit, pdu = mb.rtu_split(rtu)
    if pdu[0] != mb.READ_HOLDING or count != SUMMARY_BYTES:
        raise FrameError(f"4G upload carries function {pdu[0]:02X} with {count} bytes, expected FC03 with "
                         f"{SUMMARY_BYTES} (the 48-register summary block)")
    return Upload(serial, address, unit, mb.parse_read_reply(pdu, count // 2))


def parse_downlink_reply(body: bytes) -> bytes:
    """The RTU reply inside a 0x90 from the meter (a leading serial is dropped); CRC checked by the caller."""
    if len(body) >= SERIAL_LEN + 5 and all(b == 0 or 0x20 <= b < 0x7F for b in body[:SERIAL_LEN]) \
            and any(body[:SERIAL_LEN]):
        return body[SERIAL_LEN:]
    if len(body) < 5:
        raise FrameError("4G downlink reply too short for a Modbus frame")
    return body


def time_sync_body(when: datetime) -> bytes:
    """yy mm dd ww hh mm ss in the meter's local time (Sunday = 0)."""
    return bytes([when.year % 100, when.month, when.day, when.isoweekday() % 7, when.hour, when.minute, when.second])


def register_body(serial: str, iccid: str = "", rssi: int = 20, interval_min: int = 15) -> bytes:
    """A 0x84 body (simulators, tests)."""
    return (serial.encode().ljust(SERIAL_LEN, b"\x00")[:SERIAL_LEN] + iccid.encode().ljust(ICCID_LEN, b"\x00")[:ICCID_LEN]
            + bytes([rssi, 0x01, 0x00, 0x01, 0x00, 0x01, 0x00, interval_min]))


def upload_body(serial: str, unit: int, registers: list[int]) -> bytes:
    """A 0x91 body carrying the summary block (simulators, tests)."""
    pdu = bytes([mb.READ_HOLDING, 2 * len(registers)]) + b"".join(r.to_bytes(2, "big") for r in registers)
    return (serial.encode().ljust(SERIAL_LEN, b"\x00")[:SERIAL_LEN] + b"[[" + str(unit).encode() + b"(("
            + mb.rtu_frame(unit, pdu) + b"))]]")
