"""CJ/T 188 raw-stream client through a transparent serial server.

    bus = Cjt188Client(host, port, timeout=1.0, di_order="low_first", preamble=2)
    reply = await bus.transact(cjt188.read_request("12345678"))   # -> Cjt188Frame
"""

from __future__ import annotations

import asyncio

from meterhub.protocols import cjt188
from meterhub.protocols.errors import DeviceError, FrameError
from meterhub.transports.stream import StreamBus


class Cjt188Client(StreamBus):
    """Asyncio CJ/T 188 master for one bus."""

    def __init__(self, host: str, port: int, di_order: str = "low_first", preamble: int = 2,
                 **kwargs: float) -> None:
        kwargs.setdefault("timeout", 1.0)
        super().__init__(host, port, **kwargs)
        self.di_order, self.preamble = di_order, preamble

    async def transact(self, request: cjt188.Cjt188Frame, di_order: str | None = None) -> cjt188.Cjt188Frame:
        """Send ``request``; return the checked reply (same address unless broadcast, reply bit set)."""
        order = di_order or self.di_order
        where = f"{self.name} meter {request.address}"

        async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> cjt188.Cjt188Frame:
            writer.write(cjt188.encode(request, order, self.preamble))
            await writer.drain()
            byte = await reader.readexactly(1)
            skipped = 0
            while byte == b"\xfe":
                skipped += 1
                if skipped > 16:
                    raise FrameError("endless FE preamble", where)
                byte = await reader.readexactly(1)
            head = byte + await reader.readexactly(10)
            try:
                length = cjt188.frame_length(head)
                assert length is not None
                raw = head + await reader.readexactly(length - len(head))
                return cjt188.decode(raw, order)
            except DeviceError as err:
                raise type(err)(str(err), where) from err

        reply = await self.transaction(where, exchange)
        if not reply.is_reply:
            raise FrameError(f"reply without direction bit (C={reply.control:02X})", where)
        if reply.control & 0x3F != request.control & 0x3F:
            raise FrameError(f"reply function {reply.control:02X} does not match {request.control:02X}", where)
        if request.address != cjt188.BROADCAST and reply.address.lstrip("0") != request.address.lstrip("0"):
            raise FrameError(f"reply from meter {reply.address}", where)
        if reply.is_error:
            raise DeviceError(f"meter reported an error (C={reply.control:02X}, data {reply.data.hex(' ')})", where)
        return reply
