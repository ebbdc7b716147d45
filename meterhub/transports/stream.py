"""A TCP stream to a gateway with a per-bus lock, timeouts and reconnect on failure."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from meterhub.protocols.errors import DeviceError, DeviceTimeout, FrameError

log = logging.getLogger(__name__)
T = TypeVar("T")


class StreamBus:
    """One TCP connection = one bus; ``transaction`` serialises request/reply pairs."""

    def __init__(
        self, host: str, port: int, timeout: float = 0.5, connect_timeout: float = 3.0,
        inter_frame_delay: float = 0.0,
    ) -> None:
        self.host, self.port = host, port
        self._name = f"bus {host}:{port}"
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.inter_frame_delay = inter_frame_delay
        self.lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._broken_logged = False
        self.abortive_close = False  # the collector's bus ports: every close resets (see no_linger)

    @property
    def name(self) -> str:
        return self._name

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        """Open the connection (called automatically by the first transaction)."""
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.connect_timeout
            )
        except (OSError, TimeoutError) as err:
            raise DeviceTimeout(
                f"cannot connect ({err.__class__.__name__}: {err}); check the gateway's address, port and power",
                self.name, error_code="gateway.cannot_connect",
            ) from err
        if self.abortive_close:
            no_linger(self._writer.transport)
        if self._broken_logged:
            log.info("%s: connection restored", self.name)
            self._broken_logged = False

    def abort(self) -> None:
        """Drop the connection at once: unsent and unacknowledged bytes are discarded (RST), so no request
        waiting in the kernel reaches the bus later (the collector's bus lease ran out)."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            hard_close(writer.transport)

    async def close(self) -> None:
        """Close the connection; the next transaction reconnects."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def __aenter__(self) -> StreamBus:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def transaction(self, where: str, exchange: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                                                 Awaitable[T]]) -> T:
        """Run ``exchange(reader, writer)`` alone on the bus, with the timeout; drop the link on failure."""
        async with self.lock:
            if not self.connected:
                await self.connect()
            assert self._reader is not None and self._writer is not None
            try:
                async with asyncio.timeout(self.timeout):  # no extra task per request (wait_for makes one)
                    return await exchange(self._reader, self._writer)
            except TimeoutError as err:
                await self.close()
                raise DeviceTimeout(
                    f"no reply within {self.timeout:.3f} s; check slave address, baud rate, wiring and power",
                    where, params={"seconds": self.timeout},
                ) from err
            except (asyncio.IncompleteReadError, ConnectionError, OSError) as err:
                await self.close()
                if not self._broken_logged:
                    log.warning("%s: connection lost (%s)", self.name, err)
                    self._broken_logged = True
                raise DeviceTimeout(f"connection lost ({err.__class__.__name__}); will reconnect", where,
                                    error_code="gateway.connection_lost") from err
            except FrameError:
                await self.close()
                raise
            except DeviceError:
                raise
            finally:
                if self.inter_frame_delay:
                    await asyncio.sleep(self.inter_frame_delay)


def no_linger(transport: Any) -> None:
    """``SO_LINGER`` 0 on a bus connection: whenever it is closed (by us, on a fault, or when the process dies)
    the kernel resets it and discards what it still had to send. A request the master gave up on (it timed out
    while the network was cut, say) is then never delivered to the gateway minutes later, when another master
    may own the bus; a graceful close would keep retransmitting it."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except Exception:  # a transport without a real socket (tests): abort() is what is left
            log.debug("SO_LINGER not set on %r", sock)


def hard_close(transport: Any) -> None:
    """Close at once with a reset (``no_linger``), the transport's and the kernel's send queues discarded."""
    no_linger(transport)
    transport.abort()
