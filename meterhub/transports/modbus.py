"""Modbus TCP (MBAP) and Modbus RTU-over-TCP client: FC01, FC03, FC05, FC16 with strict validation.

    bus = ModbusClient(host, port, framing="tcp" | "rtu", timeout=0.5, inter_frame_delay=0.0)
    await bus.read_holding_registers(unit, address, count) -> list[int]
    await bus.write_registers(unit, address, values)        # FC16 (Acrel writes only with FC16)
    await bus.read_coils(unit, address, count) -> list[bool]
    await bus.write_coil(unit, address, on)
    await bus.write_register(unit, address, value)   # FC06 (valve water meters)

The connection is an ``asyncio.Protocol`` that assembles reply frames as bytes arrive and hands a complete
frame to the waiting request: no stream reader, task or timeout context per request. A collector runs
thousands of these transactions a second, and this is where its CPU goes.

A timeout keeps the connection: reconnecting cost more CPU than the rest of a faulty meter's read, and on a
transparent RS485 gateway it does not even stop a late reply (the serial server hands the line's bytes to
whichever connection is open). Late replies are told apart instead: MBAP by transaction id; RTU by dropping
whatever arrived while no request was out and skipping a whole, CRC-valid frame of another unit. A late reply
of the same unit arriving after the next request went out is the case left, as with every RTU master; the
reply's function code, byte count and CRC must still match. The connection is closed when it is lost, when
an MBAP stream is out of step, and when two units in a row time out (a half-open connection answers nobody).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from meterhub.protocols import modbus as mb
from meterhub.transports.stream import hard_close, no_linger
from meterhub.protocols.errors import DeviceTimeout, FrameError

log = logging.getLogger(__name__)
FrameEnd = Callable[[bytearray], "int | None"]


def rtu_reply_end(buf: bytearray) -> int | None:
    """Length of the RTU reply at the start of ``buf`` once 3 bytes tell it (every reply has >= 5)."""
    return mb.rtu_reply_length(bytes(buf[:3])) if len(buf) >= 3 else None


def mbap_end(buf: bytearray) -> int | None:
    """Length of the MBAP frame at the start of ``buf`` once its header is in."""
    if len(buf) < 7:
        return None
    length = buf[4] << 8 | buf[5]
    if not 2 <= length <= 254:
        raise FrameError(f"MBAP length {length} out of range")
    return 6 + length


class _Link(asyncio.Protocol):
    """The gateway connection: buffers what arrives and completes the waiting request's frame."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: Any = None
        self.waiter: asyncio.Future[bytes] | None = None
        self.frame_end: FrameEnd = rtu_reply_end
        self.lost: Exception | None = None

    def connection_made(self, transport: Any) -> None:  # an asyncio or a uvloop transport
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("the gateway closed the connection")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.lost)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.deliver()

    def deliver(self) -> None:
        """Complete the waiter with the first whole frame in the buffer, if there is one."""
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        try:
            total = self.frame_end(self.buf)
        except FrameError as err:
            waiter.set_exception(err)
            return
        if total is not None and len(self.buf) >= total:
            frame = bytes(self.buf[:total])
            del self.buf[:total]
            waiter.set_result(frame)


def _expire(waiter: asyncio.Future[bytes]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


async def _next_frame(link: _Link, frame_end: FrameEnd, deadline: float) -> bytes:
    """The next whole frame on ``link``; TimeoutError at ``deadline`` (loop time)."""
    if link.lost is not None:
        raise link.lost
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_at(deadline, _expire, waiter)
    link.waiter, link.frame_end = waiter, frame_end
    try:
        link.deliver()  # a frame may already be buffered
        return await waiter
    finally:
        timer.cancel()
        link.waiter = None


class ModbusClient:
    """Asyncio Modbus master for one gateway connection (one bus)."""

    def __init__(self, host: str, port: int, framing: str = "tcp", timeout: float = 0.5,
                 connect_timeout: float = 3.0, inter_frame_delay: float = 0.0) -> None:
        if framing not in ("tcp", "rtu"):
            raise ValueError(f"framing must be 'tcp' or 'rtu', not {framing!r}")
        self.host, self.port, self.framing = host, port, framing
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.inter_frame_delay = inter_frame_delay
        self.lock = asyncio.Lock()
        self.name = f"bus {host}:{port}"
        self._link: _Link | None = None
        self._tid = 0
        self._broken_logged = False
        self._silent: set[int] = set()  # units that timed out since the last reply on this connection
        self.abortive_close = False  # the collector's bus ports: every close resets (see stream.no_linger)

    @property
    def connected(self) -> bool:
        link = self._link
        return link is not None and link.lost is None and not link.transport.is_closing()

    async def connect(self) -> None:
        """Open the connection (called automatically by the first request)."""
        loop = asyncio.get_running_loop()
        try:
            _, link = await asyncio.wait_for(loop.create_connection(_Link, self.host, self.port),
                                             self.connect_timeout)
        except (OSError, TimeoutError) as err:
            raise DeviceTimeout(
                f"cannot connect ({err.__class__.__name__}: {err}); check the gateway's address, port and power",
                self.name, error_code="gateway.cannot_connect",
            ) from err
        self._link = link
        if self.abortive_close:
            no_linger(link.transport)
        if self._broken_logged:
            log.info("%s: connection restored", self.name)
            self._broken_logged = False

    def abort(self) -> None:
        """Drop the connection at once, discarding unsent and unacknowledged bytes (see ``stream.hard_close``)."""
        link, self._link = self._link, None
        self._silent.clear()
        if link is not None and link.transport is not None:
            hard_close(link.transport)

    async def close(self) -> None:
        """Close the connection; the next request reconnects."""
        link, self._link = self._link, None
        self._silent.clear()
        if link is not None and link.transport is not None:
            link.transport.close()

    async def __aenter__(self) -> ModbusClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def request(self, unit: int, pdu: bytes) -> bytes:
        """Send one request PDU to ``unit`` and return the reply PDU (frame checks done)."""
        async with self.lock:
            if not self.connected:
                await self.connect()
            link = self._link
            assert link is not None
            if link.buf:
                link.buf.clear()  # bytes that came while no request was out: a late reply, line noise
            deadline = asyncio.get_running_loop().time() + self.timeout
            other: int | None = None  # a unit whose (late) reply came while we waited for ``unit``
            try:
                if self.framing == "tcp":
                    self._tid = (self._tid + 1) & 0xFFFF
                    link.transport.write(mb.mbap_frame(self._tid, unit, pdu))
                    while True:
                        frame = await _next_frame(link, mbap_end, deadline)
                        tid, r_unit, reply = mb.mbap_split(frame, self._where(unit))
                        if tid == self._tid:
                            break  # stale replies of timed-out requests carry older ids
                else:
                    link.transport.write(mb.rtu_frame(unit, pdu))
                    while True:
                        frame = await _next_frame(link, rtu_reply_end, deadline)
                        r_unit, reply = mb.rtu_split(frame, self._where(unit))
                        if r_unit == unit:
                            break
                        other = r_unit  # a late reply of another unit (RTU has no transaction id): skip it
            except TimeoutError as err:
                if other is not None:
                    raise FrameError(f"reply from unit {other}, expected {unit}", self._where(unit)) from err
                self._silent.add(unit)
                if len(self._silent) > 1:  # two units in a row said nothing: suspect the connection itself
                    await self.close()
                raise DeviceTimeout(
                    f"no reply within {self.timeout:.3f} s; check slave address, baud rate, wiring and power",
                    self._where(unit), params={"seconds": self.timeout},
                ) from err
            except (ConnectionError, OSError) as err:
                await self.close()
                if not self._broken_logged:
                    log.warning("%s: connection lost (%s)", self.name, err)
                    self._broken_logged = True
                raise DeviceTimeout(f"connection lost ({err.__class__.__name__}); will reconnect",
                                    self._where(unit), error_code="gateway.connection_lost") from err
            except FrameError as err:
                if self.framing == "tcp":
                    await self.close()  # an MBAP stream out of step cannot be resynchronised
                # RTU resynchronises on silence: what is left of the bad frame is dropped before the next request
                if err.where:
                    raise
                raise type(err)(str(err), self._where(unit)) from err
            finally:
                if self.inter_frame_delay:
                    await asyncio.sleep(self.inter_frame_delay)
            if self._silent:
                self._silent.clear()
            if r_unit != unit:
                raise FrameError(f"reply from unit {r_unit}, expected {unit}", self._where(unit))
            return reply

    def _where(self, unit: int) -> str:
        return f"{self.name} unit {unit}"

    async def read_holding_registers(self, unit: int, address: int, count: int) -> list[int]:
        """FC03."""
        reply = await self.request(unit, mb.read_request(address, count))
        return mb.parse_read_reply(reply, count, self._where(unit))

    async def write_registers(self, unit: int, address: int, values: list[int]) -> None:
        """FC16; the reply must echo address and count."""
        pdu = mb.write_request(address, list(values))
        reply = await self.request(unit, pdu)
        mb.parse_echo_reply(reply, pdu, self._where(unit))

    async def write_register(self, unit: int, address: int, value: int) -> None:
        """FC06; the reply must echo address and value."""
        pdu = mb.write_single_request(address, value)
        reply = await self.request(unit, pdu)
        mb.parse_echo_reply(reply, pdu, self._where(unit))

    async def read_coils(self, unit: int, address: int, count: int) -> list[bool]:
        """FC01."""
        reply = await self.request(unit, mb.read_request(address, count, mb.READ_COILS))
        return mb.parse_coils_reply(reply, count, self._where(unit))

    async def write_coil(self, unit: int, address: int, on: bool) -> None:
        """FC05."""
        pdu = mb.write_coil_request(address, on)
        reply = await self.request(unit, pdu)
        mb.parse_echo_reply(reply, pdu, self._where(unit))

