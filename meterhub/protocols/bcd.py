"""Packed BCD helpers shared by the CJ/T 188 and DL/T 645 framers (low byte first on the wire)."""

from __future__ import annotations

from decimal import Decimal

from meterhub.protocols.errors import FrameError


def bcd_to_int(data: bytes, little_endian: bool = True) -> int:
    """Decode packed BCD; raises FrameError on a nibble above 9."""
    digits = []
    for byte in reversed(data) if little_endian else data:
        hi, lo = byte >> 4, byte & 0x0F
        if hi > 9 or lo > 9:
            raise FrameError(f"invalid BCD byte {byte:02X} in {data.hex(' ')}")
        digits.append(f"{hi}{lo}")
    return int("".join(digits) or "0")


def int_to_bcd(value: int, nbytes: int, little_endian: bool = True) -> bytes:
    """Encode a non-negative integer as ``nbytes`` of packed BCD."""
    if value < 0 or value >= 10 ** (2 * nbytes):
        raise ValueError(f"{value} does not fit in {nbytes} BCD bytes")
    text = f"{value:0{2 * nbytes}d}"
    out = bytes(int(text[i : i + 2], 16) for i in range(0, len(text), 2))
    return out[::-1] if little_endian else out


def bcd_decimal(data: bytes, decimals: int, signed: bool = False) -> Decimal:
    """Decode a BCD value with ``decimals`` implied decimals; ``signed``: MSB bit 7 is the sign."""
    raw = bytearray(data)
    negative = False
    if signed and raw:
        negative = bool(raw[-1] & 0x80)
        raw[-1] &= 0x7F
    value = Decimal(bcd_to_int(bytes(raw))).scaleb(-decimals)
    return -value if negative else value


def address_to_bcd(address: str, nbytes: int) -> bytes:
    """A decimal meter address ("12345678") as ``nbytes`` BCD, low byte first; 'AA…'/'99…' pass through."""
    text = str(address).strip().upper()
    if text and set(text) <= {"A"} or (len(text) == 2 * nbytes and set(text) <= {"9"}):
        fill = 0xAA if "A" in text else 0x99
        return bytes([fill] * nbytes)
    if not text.isdigit() or len(text) > 2 * nbytes:
        raise ValueError(f"meter address {address!r} must be up to {2 * nbytes} decimal digits")
    return int_to_bcd(int(text), nbytes)


def bcd_to_address(data: bytes) -> str:
    """Inverse of address_to_bcd; wildcard bytes become 'AA…'."""
    if all(b == 0xAA for b in data):
        return "AA" * len(data)
    return f"{bcd_to_int(data):0{2 * len(data)}d}"
