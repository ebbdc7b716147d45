"""How many bus transactions one collector process keeps in flight, adapted to what its CPU can serve.

    limit = InflightLimit(start=256)
    task = asyncio.create_task(limit.regulate())      # one per process, next to the bus tasks
    async with limit:                                  # around each transaction (BusPort does this)
        ...

Every bus has one request outstanding at most; a process with more buses than its CPU can poll at line rate
would otherwise answer its replies late, time out, reconnect and fail reads that were fine (congestion
collapse). The limit grows while the event loop keeps up and shrinks when the loop falls behind (its lag
is measured every ``period_s``) or when more than a tenth of the period's transactions time out (the other
end cannot keep up: a dead meter or two per bus stay well under that), so an overloaded collector gets slower cycles (the overrun alarm says so)
instead of false timeouts. Waiters are served in arrival order. A lag well under the bus timeouts (0.15 s
against 0.5 s) costs nothing, so only a lag above it shrinks the limit: every slot is a bus transaction
of ~0.1 s on the wire, and too small a limit would idle the CPU.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any


class InflightLimit:
    """An asyncio semaphore whose size follows the event loop's lag (additive increase, multiplicative decrease)."""

    def __init__(self, start: int = 512, minimum: int = 16, maximum: int = 8192, step: int = 32,
                 lag_high_s: float = 0.15, lag_low_s: float = 0.05, period_s: float = 0.1,
                 timeout_share: float = 0.1) -> None:
        self.timeout_share = timeout_share
        self.limit, self.minimum, self.maximum, self.step = start, minimum, maximum, step
        self.lag_high_s, self.lag_low_s, self.period_s = lag_high_s, lag_low_s, period_s
        self.active = 0
        self.done = 0  # transactions finished in this period
        self.timeouts = 0  # … of which timed out
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def __aenter__(self) -> InflightLimit:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.release()

    async def acquire(self) -> None:
        if self.active < self.limit and not self._waiters:
            self.active += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted, then cancelled before it could run: hand the slot on
            raise

    def release(self, timed_out: bool = False) -> None:
        self.active -= 1
        self.done += 1
        self.timeouts += timed_out
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self.active < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)

    def adjust(self, lag_s: float) -> None:
        """One control step from the measured loop lag and the period's share of timed-out transactions
        (more than ``timeout_share``: the gateways, or this host, cannot keep up with so many at once)."""
        timeouts, done = self.timeouts, self.done
        self.timeouts = self.done = 0
        if lag_s > self.lag_high_s or (self.timeout_share and done >= 20 and timeouts > self.timeout_share * done):
            self.limit = max(self.minimum, int(self.limit * 0.8))
        elif lag_s < self.lag_low_s and self.active >= self.limit:
            self.limit = min(self.maximum, self.limit + self.step)
        self._grant()

    async def regulate(self) -> None:
        """Measure the loop's lag every ``period_s`` and adjust the limit; runs until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.period_s)
            self.adjust(max(0.0, loop.time() - start - self.period_s))
