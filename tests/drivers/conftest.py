"""Helpers for driver tests: run a coroutine, start a simulated bus, open a matching client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from meterhub.plugins import driver_registry, new_plugin_manager
from meterhub.simulator.model import SimClock
from meterhub.simulator.server import Faults, LineTiming, SimServer
from meterhub.transports import open_transport

REGISTRY = driver_registry(new_plugin_manager())
CASES = [(key, i) for key, drv in sorted(REGISTRY.items()) for i in range(len(drv.examples()))]


def run(coro):
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def bus_with(devices, framing: str, line: LineTiming | None = None, faults: Faults | None = None,
                   timeout: float = 0.5) -> AsyncIterator[tuple[SimServer, object]]:
    server = await SimServer(devices, framing=framing, line=line, faults=faults).start()
    client = open_transport("127.0.0.1", server.port, framing, timeout=timeout)
    try:
        yield server, client
    finally:
        await client.close()
        await server.stop()


@pytest.fixture
def clock() -> SimClock:
    return SimClock(acceleration=0.0)
