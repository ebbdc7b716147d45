"""Reference definitions written independently of the code under test (tests compare against them)."""

from __future__ import annotations


def crc16_modbus(data: bytes) -> int:
    """Modbus CRC-16 by its bitwise definition: polynomial 0xA001 (reflected 0x8005), initial value 0xFFFF."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc
