"""Our own asyncio server for simulated buses: Modbus TCP, Modbus RTU over TCP, CJ/T 188 over TCP.

One ``SimServer`` = one gateway port = one RS485 bus with several devices. Connections to the same
port share the bus: one transaction at a time. Optional ``LineTiming`` delays each transaction by the
time the frames would take on the wire (11-bit characters, t3.5 gaps, device turnaround); ``Faults``
injects timeouts, CRC errors, exception replies and dead devices (seeded, so tests are repeatable).

    server = SimServer(devices, framing="rtu", line=LineTiming(9600), faults=Faults(timeout=0.1))
    await server.start()            # server.port is the bound port (host 127.0.0.1, port 0 = any)
    ...
    await server.stop()
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from meterhub.protocols import cjt188
from meterhub.protocols import modbus as mb
from meterhub.protocols.errors import DeviceError, ModbusExceptionReply
from meterhub.simulator.device import SimDevice

log = logging.getLogger(__name__)


@dataclass
class LineTiming:
    """RS485 timing: ``baud``, 11 bits per character, t3.5 gaps, device ``turnaround`` seconds."""

    baud: int = 9600
    char_bits: int = 11
    turnaround: float = 0.010

    @property
    def char_time(self) -> float:
        return self.char_bits / self.baud

    @property
    def t35(self) -> float:
        return 3.5 * self.char_time if self.baud <= 19200 else 0.00175

    def transaction_time(self, request_bytes: int, reply_bytes: int) -> float:
        """Seconds the bus is busy for one request/reply pair."""
        return (request_bytes + reply_bytes) * self.char_time + 2 * self.t35 + self.turnaround


@dataclass
class Faults:
    """Fault injection; probabilities are per transaction."""

    timeout: float = 0.0
    crc_error: float = 0.0
    exception: float = 0.0
    exception_codes: tuple[int, ...] = (1, 2, 3, 4)
    dead: set[Any] = field(default_factory=set)
    forced_exception: dict[Any, int] = field(default_factory=dict)
    seed: int = 1

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


class SimServer:
    """A simulated gateway port serving ``devices`` on one bus."""

    def __init__(self, devices: Iterable[SimDevice], framing: str = "tcp", host: str = "127.0.0.1",
                 port: int = 0, line: LineTiming | None = None, faults: Faults | None = None,
                 di_order: str = "low_first") -> None:
        if framing not in ("tcp", "rtu", "cjt188"):
            raise ValueError(f"framing must be tcp, rtu or cjt188, not {framing!r}")
        self.devices: list[SimDevice] = list(devices)
        self.by_unit: dict[Any, SimDevice] = {}
        for device in self.devices:
            for unit in device.unit_ids:
                if unit in self.by_unit:
                    raise ValueError(f"two simulated devices answer address {unit} on one bus")
                self.by_unit[unit] = device
        self.framing, self.host, self.port = framing, host, port
        self.line, self.faults, self.di_order = line, faults or Faults(), di_order
        self.bus = asyncio.Lock()
        self.transactions = 0
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> SimServer:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("simulated %s bus on %s:%d with %d devices", self.framing, self.host, self.port, len(self.devices))
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> SimServer:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    continue
                async with self.bus:
                    reply = self._answer(request)
                    self.transactions += 1
                    if self.line:
                        await asyncio.sleep(self.line.transaction_time(len(request), len(reply or b"")))
                if reply:
                    writer.write(reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        if self.framing == "tcp":
            header = await reader.readexactly(7)
            length = int.from_bytes(header[4:6], "big")
            return header + await reader.readexactly(max(length - 1, 0))
        if self.framing == "rtu":
            buf = await reader.readexactly(2)
            total = mb.rtu_request_length(buf)
            if total is None and buf[1] in (0x0F, 0x10):
                buf += await reader.readexactly(5)
                total = mb.rtu_request_length(buf)
            if total is None:  # unknown function: the frame ends with line silence
                try:
                    while len(buf) < 256:
                        buf += await asyncio.wait_for(reader.read(256), 0.02)
                except TimeoutError:
                    pass
                return buf
            return buf + await reader.readexactly(total - len(buf))
        byte = await reader.readexactly(1)
        while byte == b"\xfe":
            byte = await reader.readexactly(1)
        if byte != b"\x68":
            return None  # noise between frames is ignored, as on a real line
        head = byte + await reader.readexactly(10)
        return head + await reader.readexactly(13 + head[10] - len(head))

    def _answer(self, request: bytes) -> bytes | None:
        """Reply bytes for one request frame, after fault injection; None = silence."""
        faults = self.faults
        try:
            if self.framing == "cjt188":
                return self._answer_cjt188(request)
            if self.framing == "tcp":
                tid, unit, pdu = mb.mbap_split(request)
            else:
                unit, pdu = mb.rtu_split(request)
        except DeviceError as err:
            log.debug("simulator dropped a bad frame: %s", err)
            return None
        device = self.by_unit.get(unit)
        if device is None or unit in faults.dead or faults.rng.random() < faults.timeout:
            return None
        code = faults.forced_exception.get(unit)
        if code is None and faults.rng.random() < faults.exception:
            code = faults.rng.choice(faults.exception_codes)
        reply = mb.exception_pdu(pdu[0], code) if code else self._execute(device, unit, pdu)
        if self.framing == "tcp":
            return mb.mbap_frame(tid, unit, reply)
        frame = bytearray(mb.rtu_frame(unit, reply))
        if faults.rng.random() < faults.crc_error:
            frame[-1] ^= 0x5A
        return bytes(frame)

    def _execute(self, device: SimDevice, unit: int, pdu: bytes) -> bytes:
        fc = pdu[0]
        try:
            if fc == mb.READ_HOLDING and len(pdu) == 5:
                address, count = int.from_bytes(pdu[1:3], "big"), int.from_bytes(pdu[3:5], "big")
                if not 1 <= count <= mb.MAX_READ:
                    raise ModbusExceptionReply(3)
                words = device.read_registers(unit, address, count)
                return bytes([fc, 2 * count]) + b"".join(w.to_bytes(2, "big") for w in words)
            if fc == mb.WRITE_MULTIPLE and len(pdu) >= 6:
                address, count, nbytes = int.from_bytes(pdu[1:3], "big"), int.from_bytes(pdu[3:5], "big"), pdu[5]
                if not 1 <= count <= mb.MAX_WRITE or nbytes != 2 * count or len(pdu) != 6 + nbytes:
                    raise ModbusExceptionReply(3)
                values = [int.from_bytes(pdu[6 + 2 * i : 8 + 2 * i], "big") for i in range(count)]
                device.write_registers(unit, address, values)
                return pdu[:5]
            if fc == mb.READ_COILS and len(pdu) == 5:
                address, count = int.from_bytes(pdu[1:3], "big"), int.from_bytes(pdu[3:5], "big")
                bits = device.read_coils(unit, address, count)
                packed = bytearray((count + 7) // 8)
                for i, bit in enumerate(bits):
                    packed[i // 8] |= int(bit) << (i % 8)
                return bytes([fc, len(packed)]) + bytes(packed)
            if fc == mb.WRITE_COIL and len(pdu) == 5:
                value = int.from_bytes(pdu[3:5], "big")
                if value not in (0, 0xFF00):
                    raise ModbusExceptionReply(3)
                device.write_coil(unit, int.from_bytes(pdu[1:3], "big"), value == 0xFF00)
                return pdu
            raise ModbusExceptionReply(1)
        except ModbusExceptionReply as err:
            return mb.exception_pdu(fc, err.code)
        except Exception:  # a simulator bug must look like a device failure, not kill the bus
            log.exception("simulated device %s failed", unit)
            return mb.exception_pdu(fc, 4)

    def _answer_cjt188(self, request: bytes) -> bytes | None:
        frame = cjt188.decode(request, self.di_order)
        if frame.address == cjt188.BROADCAST:
            device = self.devices[0] if len(self.devices) == 1 else None
        else:
            device = self.by_unit.get(frame.address.lstrip("0") or "0")
        if device is None or device.address in self.faults.dead or self.faults.rng.random() < self.faults.timeout:
            return None
        reply = device.handle_cjt188(frame)
        if reply is None:
            return None
        raw = bytearray(cjt188.encode(reply, self.di_order))
        if self.faults.rng.random() < self.faults.crc_error:
            raw[-2] ^= 0x5A
        return bytes(raw)
