"""Our own asyncio server for simulated buses: Modbus TCP, Modbus RTU over TCP, CJ/T 188 over TCP.

One ``SimServer`` = one gateway port = one RS485 bus with several devices. Connections to the same
port share the bus: one transaction at a time. Optional ``LineTiming`` delays each transaction by the
time the frames would take on the wire (11-bit characters, t3.5 gaps, device turnaround); ``Faults``
injects timeouts, CRC errors, exception replies and dead devices (seeded, so tests are repeatable).

    server = SimServer(devices, framing="rtu", line=LineTiming(9600), faults=Faults(timeout=0.1))
    await server.start()            # server.port is the bound port (host 127.0.0.1, port 0 = any)
    ...
    await server.stop()

Every connection that sent a request is a *master* of the bus: ``server.masters`` keeps, per connection, the
peer address, the wall-clock time of its first request and the end of its last transaction, and a count;
``overlapping_masters()`` lists the pairs of masters whose spans intersect (two collectors talking to one
bus in the same period; zero where the one-master-per-bus rule holds).
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
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
    """A simulated gateway port serving ``devices`` on one bus.

    The I/O is an ``asyncio.Protocol`` (no task or stream per request): a request is answered when its
    frame is complete, and the reply leaves when the simulated bus is done with the transaction. The bus
    is one resource shared by every connection to the port: a transaction starts when the previous one
    ends (``bus_free_at``), so two masters on one port queue exactly as on a real RS485 line.
    """

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
        self.transactions = 0
        self.bus_free_at = 0.0  # loop time when the line is idle again
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self.masters: list[Master] = []  # every connection that sent a request, in order of its first one

    async def start(self) -> SimServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("simulated %s bus on %s:%d with %d devices", self.framing, self.host, self.port, len(self.devices))
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for connection in list(self._connections):
                connection.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> SimServer:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    def take_request(self, buf: bytearray) -> int | None:
        """Length of the complete request at the start of ``buf``; None: wait for more bytes; 0 for an
        RTU frame of unknown length, which (as on a real line) ends with silence."""
        if self.framing == "tcp":
            if len(buf) < 7:
                return None
            total = 6 + max(int.from_bytes(buf[4:6], "big"), 1)
            return total if len(buf) >= total else None
        if self.framing == "rtu":
            if len(buf) < 2:
                return None
            total = mb.rtu_request_length(bytes(buf[:7]))
            if total is None:
                return None if buf[1] in (0x0F, 0x10) and len(buf) < 7 else 0
            return total if len(buf) >= total else None
        if len(buf) < 11:
            return None
        total = 13 + buf[10]
        return total if len(buf) >= total else None

    def overlapping_masters(self) -> list[tuple[Master, Master]]:
        """Pairs of masters (connections) whose request spans intersect in time."""
        ordered = sorted(self.masters, key=lambda m: m.first)
        return [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:] if b.first < a.last]

    def transact(self, connection: _Connection, request: bytes) -> None:
        """Answer one request frame; the reply is written when the bus transaction is over."""
        now = time.time()
        master = connection.master
        if master is None:
            master = connection.master = Master(connection.peer, now, now)
            self.masters.append(master)
        master.requests += 1
        reply = self._answer(request)
        self.transactions += 1
        if self.line is None:
            master.last = time.time()
            if reply:
                connection.write(reply)
            return
        loop = asyncio.get_running_loop()
        start = max(loop.time(), self.bus_free_at)
        self.bus_free_at = start + self.line.transaction_time(len(request), len(reply or b""))
        master.last = now + (self.bus_free_at - loop.time())
        if reply:  # a connection closed meanwhile writes nothing
            loop.call_at(self.bus_free_at, connection.write, reply)

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
                return bytes([fc, 2 * count]) + struct.pack(f">{count}H", *words)
            if fc == mb.WRITE_MULTIPLE and len(pdu) >= 6:
                address, count, nbytes = int.from_bytes(pdu[1:3], "big"), int.from_bytes(pdu[3:5], "big"), pdu[5]
                if not 1 <= count <= mb.MAX_WRITE or nbytes != 2 * count or len(pdu) != 6 + nbytes:
                    raise ModbusExceptionReply(3)
                values = [int.from_bytes(pdu[6 + 2 * i : 8 + 2 * i], "big") for i in range(count)]
                device.write_registers(unit, address, values)
                return pdu[:5]
            if fc == mb.WRITE_SINGLE and len(pdu) == 5:
                device.write_single(unit, int.from_bytes(pdu[1:3], "big"), int.from_bytes(pdu[3:5], "big"))
                return pdu
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


@dataclass
class Master:
    """One connection that talked to the bus: peer, wall-clock span of its transactions, request count."""

    peer: str
    first: float
    last: float
    requests: int = 0


class _Connection(asyncio.Protocol):
    """One master's TCP connection to a simulated port."""

    def __init__(self, server: SimServer) -> None:
        self.server = server
        self.buf = bytearray()
        self.transport: Any = None
        self.silence: asyncio.TimerHandle | None = None
        self.master: Master | None = None
        self.peer = ""

    def connection_made(self, transport: Any) -> None:  # an asyncio or a uvloop transport
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        if self.silence is not None:
            self.silence.cancel()
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def write(self, reply: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.silence is not None:
            self.silence.cancel()
            self.silence = None
        if self.server.framing == "cjt188":
            self._skip_to_cjt188_start()
        while self.buf:
            total = self.server.take_request(self.buf)
            if total is None:
                return
            if total == 0:  # unknown RTU function: the frame ends after 20 ms of silence
                self.silence = asyncio.get_running_loop().call_later(0.02, self._silence)
                return
            request, self.buf = bytes(self.buf[:total]), self.buf[total:]
            self.server.transact(self, request)
            if self.server.framing == "cjt188":
                self._skip_to_cjt188_start()

    def _silence(self) -> None:
        self.silence = None
        request, self.buf = bytes(self.buf[:256]), self.buf[256:]
        self.server.transact(self, request)

    def _skip_to_cjt188_start(self) -> None:
        """Preamble (FE) and noise between CJ/T 188 frames are ignored, as on a real line."""
        start = self.buf.find(b"\x68")
        if start == -1:
            self.buf.clear()
        elif start:
            del self.buf[:start]
