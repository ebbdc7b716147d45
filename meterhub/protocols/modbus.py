"""Modbus PDU, RTU (CRC16) and TCP (MBAP) framing, for both the client and the simulator.

Public API::

    crc16(data) -> int                      # Modbus CRC16, to be appended low byte first
    rtu_frame(unit, pdu) -> bytes           # unit + pdu + CRC
    rtu_split(frame) -> (unit, pdu)         # checks length and CRC (CrcError / FrameError)
    mbap_frame(tid, unit, pdu) -> bytes     # MBAP header + pdu
    mbap_split(frame) -> (tid, unit, pdu)
    read_request(address, count) / write_request(address, values) / ... -> pdu bytes
    parse_read_reply(pdu, count) -> list[int]    # raises ModbusExceptionReply on 0x80|fc replies
    rtu_request_length(buf) / rtu_reply_length(buf) -> int | None  # how long a frame will be
"""

from __future__ import annotations

import struct

from meterhub.protocols.errors import CrcError, FrameError, ModbusExceptionReply

READ_COILS = 0x01
READ_HOLDING = 0x03
WRITE_COIL = 0x05
WRITE_SINGLE = 0x06
WRITE_MULTIPLE = 0x10
MAX_READ = 125
MAX_WRITE = 123


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc_table()


def _crc_table16() -> list[int]:
    """The register after two more bytes, for every 16-bit value the two bytes were XORed into."""
    table = []
    for value in range(0x10000):
        crc = (value >> 8) ^ _TABLE[value & 0xFF]
        table.append((crc >> 8) ^ _TABLE[crc & 0xFF])
    return table


_TABLE16 = _crc_table16()


def crc16(data: bytes) -> int:
    """Modbus CRC16 (poly 0xA001, init 0xFFFF), two bytes per step (the collector's hottest loop)."""
    crc = 0xFFFF
    n = len(data) & ~1
    for word in struct.unpack_from(f"<{n // 2}H", data):
        crc = _TABLE16[crc ^ word]
    if n != len(data):
        crc = (crc >> 8) ^ _TABLE[(crc ^ data[-1]) & 0xFF]
    return crc


def rtu_frame(unit: int, pdu: bytes) -> bytes:
    """Build an RTU frame: unit id, PDU, CRC low byte first."""
    body = bytes([unit & 0xFF]) + pdu
    return body + struct.pack("<H", crc16(body))


def rtu_split(frame: bytes, where: str = "") -> tuple[int, bytes]:
    """Check an RTU frame's length and CRC; return (unit, pdu)."""
    if len(frame) < 4:
        raise FrameError(f"RTU frame too short ({len(frame)} bytes, need at least 4)", where)
    body, crc = frame[:-2], struct.unpack("<H", frame[-2:])[0]
    if crc16(body) != crc:
        raise CrcError(
            f"RTU CRC mismatch (got {crc:04X}, computed {crc16(body):04X}); check parity/baud and noise",
            where,
        )
    return body[0], body[1:]


def mbap_frame(tid: int, unit: int, pdu: bytes) -> bytes:
    """Build a Modbus TCP frame: transaction id, protocol 0, length, unit, PDU."""
    return struct.pack(">HHHB", tid & 0xFFFF, 0, len(pdu) + 1, unit & 0xFF) + pdu


def mbap_split(frame: bytes, where: str = "") -> tuple[int, int, bytes]:
    """Check an MBAP frame; return (transaction id, unit, pdu)."""
    if len(frame) < 8:
        raise FrameError(f"MBAP frame too short ({len(frame)} bytes)", where)
    tid, proto, length, unit = struct.unpack(">HHHB", frame[:7])
    if proto != 0:
        raise FrameError(f"MBAP protocol id {proto} is not 0 (not Modbus TCP?)", where)
    if length != len(frame) - 6 or length < 2:
        raise FrameError(f"MBAP length field {length} does not match {len(frame) - 6} bytes", where)
    return tid, unit, frame[7:]


def read_request(address: int, count: int, function: int = READ_HOLDING) -> bytes:
    """PDU for FC03 (or FC01) read of ``count`` registers/coils at ``address``."""
    if not 0 <= address <= 0xFFFF or not 1 <= count <= (MAX_READ if function == READ_HOLDING else 2000):
        raise ValueError(f"bad read request address={address} count={count}")
    return struct.pack(">BHH", function, address, count)


def write_request(address: int, values: list[int]) -> bytes:
    """PDU for FC16 (write multiple registers)."""
    if not 1 <= len(values) <= MAX_WRITE or not 0 <= address <= 0xFFFF:
        raise ValueError(f"bad write request address={address} count={len(values)}")
    if any(not 0 <= v <= 0xFFFF for v in values):
        raise ValueError("register values must be 0..65535")
    return struct.pack(f">BHHB{len(values)}H", WRITE_MULTIPLE, address, len(values), 2 * len(values), *values)


def write_single_request(address: int, value: int) -> bytes:
    """PDU for FC06 (write single register)."""
    if not 0 <= address <= 0xFFFF or not 0 <= value <= 0xFFFF:
        raise ValueError(f"bad FC06 write address={address} value={value}")
    return struct.pack(">BHH", WRITE_SINGLE, address, value)


def write_coil_request(address: int, on: bool) -> bytes:
    """PDU for FC05 (write single coil)."""
    return struct.pack(">BHH", WRITE_COIL, address, 0xFF00 if on else 0x0000)


def check_exception(pdu: bytes, function: int, where: str = "") -> None:
    """Raise ModbusExceptionReply if ``pdu`` is an exception reply, FrameError if function differs."""
    if not pdu:
        raise FrameError("empty PDU", where)
    if pdu[0] == function | 0x80:
        if len(pdu) != 2:
            raise FrameError(f"exception reply of {len(pdu)} bytes, expected 2", where)
        raise ModbusExceptionReply(pdu[1], where, function)
    if pdu[0] != function:
        raise FrameError(f"reply function 0x{pdu[0]:02X} does not match request 0x{function:02X}", where)


def parse_read_reply(pdu: bytes, count: int, where: str = "") -> list[int]:
    """Registers from an FC03 reply PDU; checks byte count against ``count``."""
    check_exception(pdu, READ_HOLDING, where)
    if len(pdu) < 2 or pdu[1] != 2 * count or len(pdu) != 2 + 2 * count:
        raise FrameError(f"FC03 reply has {len(pdu)} bytes, expected {2 + 2 * count} for {count} registers", where)
    return list(struct.unpack(f">{count}H", pdu[2:]))


def parse_coils_reply(pdu: bytes, count: int, where: str = "") -> list[bool]:
    """Coil states from an FC01 reply PDU."""
    check_exception(pdu, READ_COILS, where)
    nbytes = (count + 7) // 8
    if len(pdu) != 2 + nbytes or pdu[1] != nbytes:
        raise FrameError(f"FC01 reply has {len(pdu)} bytes, expected {2 + nbytes}", where)
    return [bool(pdu[2 + i // 8] >> (i % 8) & 1) for i in range(count)]


def parse_echo_reply(pdu: bytes, request: bytes, where: str = "") -> None:
    """Check an FC05/FC06/FC16 reply, which echoes the first 5 bytes of the request."""
    check_exception(pdu, request[0], where)
    if pdu != request[:5]:
        raise FrameError(f"write reply {pdu.hex(' ')} does not echo request {request[:5].hex(' ')}", where)


def rtu_request_length(buf: bytes) -> int | None:
    """Total length of the RTU request frame starting ``buf``; None if not yet known or unknown FC."""
    if len(buf) < 2:
        return None
    fc = buf[1]
    if fc in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06):
        return 8
    if fc in (0x0F, 0x10):
        return 9 + buf[6] if len(buf) >= 7 else None
    return None


def rtu_reply_length(buf: bytes) -> int | None:
    """Total length of the RTU reply frame starting ``buf``; None if not yet known."""
    if len(buf) < 2:
        return None
    fc = buf[1]
    if fc & 0x80:
        return 5
    if fc in (0x01, 0x02, 0x03, 0x04):
        return 5 + buf[2] if len(buf) >= 3 else None
    if fc in (0x05, 0x06, 0x0F, 0x10):
        return 8
    raise FrameError(f"unexpected function code 0x{fc:02X} in reply")


def exception_pdu(function: int, code: int) -> bytes:
    """An exception reply PDU."""
    return bytes([function | 0x80, code])
