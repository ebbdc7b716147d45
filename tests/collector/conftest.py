"""Helpers: simulated buses behind an instrumented TCP proxy that plays the gateway (down/up, delays)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from meterhub.collector.bus import BusDevice, BusPoller, BusSpec, NullSink
from meterhub.collector.policy import Backoff, Quarantine, RetryPolicy
from meterhub.driver import DeviceRef
from meterhub.plugins import driver_registry, new_plugin_manager
from meterhub.simulator import Faults, LineTiming, SimClock, SimServer

REGISTRY = driver_registry(new_plugin_manager())
DTSD = REGISTRY["acrel_dtsd1352"]


class GatewayProxy:
    """A TCP proxy in front of a SimServer that records every request and checks one-at-a-time use.

    ``overlaps`` counts requests sent while an earlier one on the bus had no reply yet and was younger than
    ``give_up_s`` (the master's timeout; a closed connection also ends an outstanding request: the master gave
    up). ``down()`` closes the port and every connection;
    ``up()`` listens again on the same port. ``delay[unit]`` delays replies of one RTU unit (a slow device).
    """

    def __init__(self, target_port: int, give_up_s: float = 0.15) -> None:
        self.target_port = target_port
        self.give_up_s = give_up_s
        self.port = 0
        self.requests: list[tuple[float, int]] = []  # (time, unit) of every request
        self.pending: dict[int, float] = {}  # connection -> when its request without a reply was sent
        self.overlaps = 0
        self.max_connections = 0
        self.connections = 0
        self.delay: dict[int, float] = {}
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> GatewayProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    def units(self) -> list[int]:
        return [unit for _, unit in self.requests]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        self.max_connections = max(self.max_connections, self.connections)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        mine = id(writer)

        async def downstream() -> None:
            while data := await up_reader.read(4096):
                unit = data[0]
                if unit in self.delay:
                    await asyncio.sleep(self.delay[unit])
                self.pending.pop(mine, None)
                writer.write(data)
                await writer.drain()

        pump = asyncio.create_task(downstream())
        try:
            while data := await reader.read(4096):
                now = time.monotonic()
                if any(now - sent < self.give_up_s for sent in self.pending.values()):
                    self.overlaps += 1
                self.requests.append((now, data[0]))
                self.pending[mine] = now
                up_writer.write(data)
                await up_writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.pending.pop(mine, None)
            pump.cancel()
            self.connections -= 1
            self._writers.discard(writer)
            self._tasks.discard(task)
            up_writer.close()
            writer.close()


def sims(ids: list[int], clock: SimClock | None = None) -> list[Any]:
    clock = clock or SimClock(acceleration=0.0)
    return [DTSD.simulator(i, {}, clock=clock) for i in ids]


def devices(ids: list[int], first_meter: int = 100) -> list[BusDevice]:
    config = DTSD.validate_config({})
    return [BusDevice(i, 1, DTSD, DeviceRef(address=str(i), config=config), {1: first_meter + i}) for i in ids]


async def start_bus(ids: list[int], faults: Faults | None = None, line: LineTiming | None = None
                    ) -> tuple[SimServer, GatewayProxy]:
    server = await SimServer(sims(ids), framing="rtu", faults=faults, line=line).start()
    proxy = await GatewayProxy(server.port).up()
    return server, proxy


def poller(proxy: GatewayProxy, ids: list[int], sink: Any = None, *, interval_s: float = 3600.0,
           timeout_s: float = 0.15, quarantine_s: float = 30.0, retries: int = 2, backoff_s: float = 0.02,
           reconnect_s: float = 0.05, pause_s: float = 0.0) -> BusPoller:
    spec = BusSpec(7, 1, "127.0.0.1", proxy.port, "rtu", interval_s=interval_s, timeout_s=timeout_s, pause_s=pause_s)
    return BusPoller(spec, devices(ids), sink or NullSink(), policy=RetryPolicy(retries=retries, backoff_s=backoff_s),
                     quarantine=Quarantine(base_s=quarantine_s), reconnect=Backoff(first_s=reconnect_s, max_s=0.4))


async def until(predicate: Any, timeout: float = 5.0, step: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)


@pytest.fixture
def run():
    return lambda coro: asyncio.run(asyncio.wait_for(coro, 30))
