"""Modbus TCP (MBAP) and Modbus RTU-over-TCP client: FC01, FC03, FC05, FC16 with strict validation.

    bus = ModbusClient(host, port, framing="tcp" | "rtu", timeout=0.5, inter_frame_delay=0.0)
    await bus.read_holding_registers(unit, address, count) -> list[int]
    await bus.write_registers(unit, address, values)        # FC16 (Acrel writes only with FC16)
    await bus.read_coils(unit, address, count) -> list[bool]
    await bus.write_coil(unit, address, on)
"""

from __future__ import annotations

import asyncio
import struct

from meterhub.protocols import modbus as mb
from meterhub.protocols.errors import FrameError
from meterhub.transports.stream import StreamBus


class ModbusClient(StreamBus):
    """Asyncio Modbus master for one gateway connection (one bus)."""

    def __init__(self, host: str, port: int, framing: str = "tcp", **kwargs: float) -> None:
        if framing not in ("tcp", "rtu"):
            raise ValueError(f"framing must be 'tcp' or 'rtu', not {framing!r}")
        super().__init__(host, port, **kwargs)
        self.framing = framing
        self._tid = 0

    async def request(self, unit: int, pdu: bytes) -> bytes:
        """Send one request PDU to ``unit`` and return the reply PDU (frame checks done)."""
        where = f"{self.name} unit {unit}"

        async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
            if self.framing == "tcp":
                self._tid = (self._tid + 1) & 0xFFFF
                writer.write(mb.mbap_frame(self._tid, unit, pdu))
                await writer.drain()
                while True:
                    header = await reader.readexactly(7)
                    length = struct.unpack(">H", header[4:6])[0]
                    if not 2 <= length <= 254:
                        raise FrameError(f"MBAP length {length} out of range", where)
                    frame = header + await reader.readexactly(length - 1)
                    tid, r_unit, reply = mb.mbap_split(frame, where)
                    if tid == self._tid:
                        break  # stale replies of timed-out requests carry older ids
            else:
                writer.write(mb.rtu_frame(unit, pdu))
                await writer.drain()
                buf = await reader.readexactly(2)
                try:
                    total = mb.rtu_reply_length(buf)
                except FrameError as err:
                    raise FrameError(str(err), where) from err
                if total is None:
                    buf += await reader.readexactly(1)
                    total = mb.rtu_reply_length(buf)
                assert total is not None
                buf += await reader.readexactly(total - len(buf))
                r_unit, reply = mb.rtu_split(buf, where)
            if r_unit != unit:
                raise FrameError(f"reply from unit {r_unit}, expected {unit}", where)
            return reply

        return await self.transaction(where, exchange)

    async def read_holding_registers(self, unit: int, address: int, count: int) -> list[int]:
        """FC03."""
        reply = await self.request(unit, mb.read_request(address, count))
        return mb.parse_read_reply(reply, count, f"{self.name} unit {unit}")

    async def write_registers(self, unit: int, address: int, values: list[int]) -> None:
        """FC16; the reply must echo address and count."""
        pdu = mb.write_request(address, list(values))
        reply = await self.request(unit, pdu)
        mb.parse_echo_reply(reply, pdu, f"{self.name} unit {unit}")

    async def read_coils(self, unit: int, address: int, count: int) -> list[bool]:
        """FC01."""
        reply = await self.request(unit, mb.read_request(address, count, mb.READ_COILS))
        return mb.parse_coils_reply(reply, count, f"{self.name} unit {unit}")

    async def write_coil(self, unit: int, address: int, on: bool) -> None:
        """FC05."""
        pdu = mb.write_coil_request(address, on)
        reply = await self.request(unit, pdu)
        mb.parse_echo_reply(reply, pdu, f"{self.name} unit {unit}")
