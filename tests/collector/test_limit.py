"""The process-wide cap on transactions in flight: never exceeded, fair, adapted to the loop's lag."""

from __future__ import annotations

import asyncio

from meterhub.collector.limit import InflightLimit
from meterhub.collector.port import BusPort


def test_never_more_than_the_limit_and_first_come_first_served():
    async def go():
        limit = InflightLimit(start=3)
        running, peak, order = 0, 0, []

        async def job(i: int) -> None:
            nonlocal running, peak
            async with limit:
                order.append(i)
                running += 1
                peak = max(peak, running)
                await asyncio.sleep(0.01)
                running -= 1

        await asyncio.gather(*(job(i) for i in range(20)))
        assert peak == 3 and order == list(range(20)) and limit.active == 0

    asyncio.run(go())


def test_lag_shrinks_the_limit_and_a_busy_quiet_loop_grows_it():
    limit = InflightLimit(start=100, minimum=16, step=16)
    limit.adjust(0.2)
    assert limit.limit == 80
    for _ in range(20):
        limit.adjust(0.2)
    assert limit.limit == 16  # never below the minimum
    limit.adjust(0.0)
    assert limit.limit == 16  # quiet, but nobody is waiting for a slot: no reason to grow
    limit.active = 16
    limit.adjust(0.0)
    assert limit.limit == 32
    limit.active, limit.done, limit.timeouts = 32, 100, 5
    limit.adjust(0.0)
    assert limit.limit == 48  # 5 % timeouts (dead meters): keep growing
    limit.active, limit.done, limit.timeouts = 48, 100, 30
    limit.adjust(0.0)
    assert limit.limit == 38  # 30 %: the gateways cannot keep up, back off


def test_a_granted_waiter_cancelled_before_it_runs_hands_its_slot_on():
    async def go():
        limit = InflightLimit(start=1)
        await limit.acquire()
        first = asyncio.create_task(limit.acquire())
        second = asyncio.create_task(limit.acquire())
        await asyncio.sleep(0)
        limit.release()  # grants ``first``
        first.cancel()  # … which is cancelled before it resumes
        await asyncio.gather(first, return_exceptions=True)
        await asyncio.wait_for(second, 1)  # the slot went on to ``second``
        assert limit.active == 1

    asyncio.run(go())


class _Transport:
    """Counts how many requests are in flight across every port that shares it."""

    connected = True
    in_flight = 0
    peak = 0

    async def connect(self) -> None:
        return None

    async def read_holding_registers(self, unit: int, address: int, count: int) -> list[int]:
        type(self).in_flight += 1
        type(self).peak = max(type(self).peak, type(self).in_flight)
        await asyncio.sleep(0.005)
        type(self).in_flight -= 1
        return [0] * count


def test_bus_ports_share_the_process_limit():
    async def go():
        limit = InflightLimit(start=2)
        ports = [BusPort(_Transport(), limit=limit) for _ in range(6)]

        async def bus(port: BusPort) -> None:
            for _ in range(5):
                await port.read_holding_registers(1, 0, 2)

        await asyncio.gather(*(bus(p) for p in ports))
        assert _Transport.peak == 2 and limit.active == 0

    asyncio.run(go())
