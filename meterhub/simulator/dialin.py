"""A simulated Acrel 4G meter that dials in: registers, heartbeats, asks the time, uploads its summary block on
schedule, answers 0x90 pass-through with its simulated registers, and reconnects when the link drops.

    meter = DialinMeterSim(device_sim, serial="86012345678901234567", unit=1)
    task = asyncio.create_task(meter.run("127.0.0.1", 5030))   # until meter.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from meterhub.protocols import acrel4g
from meterhub.protocols import modbus as mb
from meterhub.protocols.errors import FrameError
from meterhub.simulator.server import SimServer

log = logging.getLogger(__name__)


class DialinMeterSim:
    """One 4G meter around a simulated Acrel device (its registers answer the pass-through)."""

    def __init__(self, device: Any, serial: str, unit: int = 1, *, upload_s: float = 60.0, heartbeat_s: float = 30.0,
                 reconnect_s: float = 1.0) -> None:
        self.device, self.serial, self.unit = device, serial, unit
        self.upload_s, self.heartbeat_s, self.reconnect_s = upload_s, heartbeat_s, reconnect_s
        self._executor = SimServer([device], framing="rtu")  # its request executor; never started
        self.connections = self.uploads = self.acks = self.passthrough = 0
        self.time_synced: bytes | None = None
        self._stop = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None

    def stop(self) -> None:
        self._stop.set()
        if self._writer is not None:
            self._writer.close()

    def drop_link(self) -> None:
        """Cut the TCP connection (the meter reconnects, as after a cellular drop-out)."""
        if self._writer is not None:
            self._writer.close()

    async def run(self, host: str, port: int) -> None:
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(self.reconnect_s)
                continue
            self._writer = writer
            self.connections += 1
            try:
                await self._session(reader, writer)
            except (ConnectionError, OSError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
                self._writer = None
            if not self._stop.is_set():
                await asyncio.sleep(self.reconnect_s)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(acrel4g.encode(acrel4g.REGISTER, acrel4g.register_body(self.serial, "89860000000000000000")))
        writer.write(acrel4g.encode(acrel4g.TIME_SYNC))
        await writer.drain()
        periodic = asyncio.create_task(self._periodic(writer))
        frames = acrel4g.FrameBuffer()
        try:
            while not self._stop.is_set():
                data = await reader.read(4096)
                if not data:
                    return
                for frame in frames.feed(data):
                    if not isinstance(frame, FrameError):
                        await self._on_frame(writer, frame)
        finally:
            periodic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await periodic

    async def _periodic(self, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        next_upload, next_beat = loop.time() + 0.05, loop.time() + self.heartbeat_s
        while True:
            now = loop.time()
            if now >= next_upload:
                await self.upload(writer)
                next_upload = now + self.upload_s
            if now >= next_beat:
                writer.write(acrel4g.encode(acrel4g.HEARTBEAT))
                await writer.drain()
                next_beat = now + self.heartbeat_s
            await asyncio.sleep(max(0.01, min(next_upload, next_beat) - loop.time()))

    async def upload(self, writer: asyncio.StreamWriter | None = None) -> None:
        """Send the summary block now."""
        writer = writer or self._writer
        if writer is None:
            return
        words = self.device.read_registers(self.unit, 0x0200, 48)
        writer.write(acrel4g.encode(acrel4g.UPLOAD, acrel4g.upload_body(self.serial, self.unit, words)))
        await writer.drain()
        self.uploads += 1

    async def _on_frame(self, writer: asyncio.StreamWriter, frame: acrel4g.Frame) -> None:
        if frame.cmd == acrel4g.TIME_SYNC:
            self.time_synced = frame.body
        elif frame.cmd == acrel4g.UPLOAD:
            self.acks += 1
        elif frame.cmd == acrel4g.DOWNLINK:
            try:
                unit, pdu = mb.rtu_split(frame.body)
            except FrameError:
                return
            if unit != self.unit:
                return
            self.passthrough += 1
            reply = self._executor._execute(self.device, unit, pdu)
            writer.write(acrel4g.encode(acrel4g.DOWNLINK, self.serial.encode().ljust(acrel4g.SERIAL_LEN, b"\0")
                                        + mb.rtu_frame(unit, reply)))
            await writer.drain()
