"""The transport a driver sees inside the collector: retries, the pause between frames, wire accounting.

``BusPort`` wraps one ``meterhub.transports`` client (one gateway connection). Each driver call
(``read_holding_registers`` …) is one transaction: the port waits out the inter-frame pause, makes sure the
connection is up (a refused connection raises :class:`GatewayUnreachable`, which is the gateway's fault, not
the device's), runs the request and applies the :class:`RetryPolicy`. Faults are counted per device so the
service can increment the device and gateway fault counters.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from meterhub.collector.leases import LeaseExpired
from meterhub.collector.limit import InflightLimit
from meterhub.collector.policy import RetryPolicy
from meterhub.errors import MeterhubError
from meterhub.protocols.errors import DeviceError, DeviceTimeout

T = TypeVar("T")


class GatewayUnreachable(MeterhubError):
    """The gateway refused or dropped the TCP connection; the bus is down, not the device."""


@dataclass
class WireStats:
    """What went over one bus: transactions, RTU bytes (request + reply) and faults."""

    transactions: int = 0
    ok: int = 0
    faults: int = 0
    retries: int = 0
    busy_s: float = 0.0
    frames: list[tuple[int, int]] = field(default_factory=list)  # (request, reply) bytes of good ones
    keep_frames: bool = False

    def add_frame(self, request: int, reply: int) -> None:
        if self.keep_frames:
            self.frames.append((request, reply))


class BusPort:
    """A driver-facing transport with the collector's transaction policy (one request at a time)."""

    def __init__(self, transport: Any, policy: RetryPolicy | None = None, pause_s: float = 0.0,
                 timeout_s: float | None = None, clock: Callable[[], float] = time.monotonic,
                 limit: InflightLimit | None = None) -> None:
        self.transport = transport
        self.limit = limit  # the process-wide cap on transactions in flight (shared by all buses)
        self.policy = policy or RetryPolicy()
        self.pause_s = pause_s
        if timeout_s is not None:
            transport.timeout = timeout_s
        self.clock = clock
        self.stats = WireStats()
        self.device_faults = 0  # faults since the last begin_device()
        self.last_error: DeviceError | None = None
        self._last_end = 0.0
        self._busy = False
        self._answered: set[Any] = set()  # units whose last transaction on this bus was answered
        self.lease: Any = None  # a leases.LocalLease: no request is sent that could outlive it
        if hasattr(transport, "abortive_close"):  # a given-up request never reaches the bus later
            transport.abortive_close = True

    def __getattr__(self, name: str) -> Any:  # di_order, name … of the wrapped client
        return getattr(self.transport, name)

    @property
    def connected(self) -> bool:
        return bool(self.transport.connected)

    def begin_device(self) -> None:
        """Start counting faults for the next device."""
        self.device_faults = 0
        self.last_error = None

    async def connect(self) -> None:
        """Open the gateway connection; GatewayUnreachable when it cannot be opened."""
        if self.transport.connected:
            return
        try:
            await self.transport.connect()
        except (DeviceError, OSError) as err:
            raise GatewayUnreachable(str(err)) from err

    async def close(self) -> None:
        await self.transport.close()

    async def abort(self) -> None:
        """Give the connection up at once: nothing queued in the kernel is delivered to the gateway later."""
        abort = getattr(self.transport, "abort", None)
        if abort is None:
            await self.transport.close()
        else:
            abort()

    # --- the transport surface drivers use ------------------------------------------------------
    async def read_holding_registers(self, unit: int, address: int, count: int) -> list[int]:
        return await self._call(self.transport.read_holding_registers, (unit, address, count), (8, 5 + 2 * count),
                                unit)

    async def write_registers(self, unit: int, address: int, values: list[int]) -> None:
        await self._call(self.transport.write_registers, (unit, address, values), (9 + 2 * len(values), 8), unit,
                         write=True)

    async def read_coils(self, unit: int, address: int, count: int) -> list[bool]:
        return await self._call(self.transport.read_coils, (unit, address, count), (8, 5 + (count + 7) // 8), unit)

    async def write_coil(self, unit: int, address: int, on: bool) -> None:
        await self._call(self.transport.write_coil, (unit, address, on), (8, 8), unit, write=True)

    async def transact(self, request: Any, **kwargs: Any) -> Any:
        """CJ/T 188 request/reply (water meters); writes (valve) are not retried."""
        write = getattr(request, "control", 0) & 0x3F == 0x04
        unit = getattr(request, "address", None)
        return await self._call(partial(self.transport.transact, **kwargs), (request,), None, unit, write=write)

    # --- the policy ------------------------------------------------------------------------------
    async def _call(self, run: Callable[..., Awaitable[T]], args: tuple[Any, ...], frame: tuple[int, int] | None,
                    unit: Any, write: bool = False) -> T:
        """One transaction with retries. A timeout tells the in-flight limit of congestion only when ``unit``
        answered its last request here: a dead or unplugged meter times out every time, whatever the load."""
        if self._busy:  # the poller guarantees this; a driver that fans out requests is a bug
            raise RuntimeError("two outstanding requests on one bus")
        attempt = 0
        while True:
            await self._pause()
            await self.connect()
            if self.limit is not None:
                await self.limit.acquire()
            if self.lease is not None and not self.lease.may_send(float(getattr(self.transport, "timeout", 1.0))):
                if self.limit is not None:
                    self.limit.release(False)
                raise LeaseExpired(f"bus lease of gateway {self.lease.gateway_id} runs out before a reply could "
                                   "come; not sending")
            self._busy = True
            start = self.clock()
            timed_out = False
            try:
                try:
                    result = await run(*args)
                except DeviceTimeout:
                    timed_out = unit in self._answered
                    self._answered.discard(unit)
                    raise
                finally:
                    if self.limit is not None:
                        self.limit.release(timed_out)
            except DeviceError as err:
                self._finish(start)
                self.stats.faults += 1
                self.device_faults += 1
                self.last_error = err
                if not self.policy.should_retry(err, attempt, write):
                    raise
                self.stats.retries += 1
                await asyncio.sleep(self.policy.backoff(attempt))
                attempt += 1
                continue
            except BaseException:
                self._finish(start)
                raise
            self._finish(start)
            self._answered.add(unit)
            self.stats.ok += 1
            if frame is not None:
                self.stats.add_frame(*frame)
            return result

    def _finish(self, start: float) -> None:
        self._busy = False
        self._last_end = self.clock()
        self.stats.transactions += 1
        self.stats.busy_s += self._last_end - start

    async def _pause(self) -> None:
        if self.pause_s > 0:
            wait = self._last_end + self.pause_s - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
