"""The way a command job reaches its meter: through the collector that owns the bus, or over the bus itself.

Both links offer the same two steps, so the worker's logic (verify, send, re-sync) is written once:
``read()`` (the meter's values now) and ``call(method, **kwargs)`` (one driver method). A device that
refuses a request for good (a Modbus exception other than busy/failure, an unsupported command) raises
:class:`DeviceRefused`; anything else that goes wrong is transient and raised as it comes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from ..collector.jobs import request_read_now, submit_command, wait_command, wait_read_now
from ..collector.leases import Fence
from ..devices.models import Gateway
from ..driver.base import DeviceRef
from ..protocols.errors import DeviceError, DeviceTimeout, UnsupportedCommand

COLLECTOR_WAIT = 30  # seconds to wait for the owning collector's reply


class DeviceRefused(UnsupportedCommand):
    """The device refused the request for good (no retry helps); the message says what it answered."""


@dataclass
class Target:
    """One command's meter, device and gateway, read from the database before the bus is touched."""

    command_id: int
    group_id: int
    meter_id: int
    kind: str
    params: dict[str, Any]
    driver_key: str
    ref: DeviceRef
    channel: int
    gateway: Gateway


def _wire(value: Any) -> Any:
    if isinstance(value, bool | int):
        return value
    if isinstance(value, list):
        return [str(x) for x in value]
    return str(value)


class CollectorLink:
    """Hands reads and driver calls to the collector that owns the bus (Redis request/reply)."""

    via = "collector"

    def __init__(self, target: Target) -> None:
        self.target = target
        self.fences: list[Fence] = []  # the bus lease each answer was produced under (epoch checked on record)

    def _fenced(self, answer: dict[str, Any]) -> None:
        fence = Fence.from_dict(answer.get("fence"))
        if fence is not None:
            self.fences.append(fence)

    async def read(self) -> dict[str, Any]:
        meter_id = self.target.meter_id
        result = await asyncio.to_thread(lambda: wait_read_now(request_read_now([meter_id]), timeout=COLLECTOR_WAIT))
        answer = result.meters.get(meter_id) or {"ok": False, "error": "no reply"}
        self._fenced(answer)
        if not answer.get("ok"):
            raise DeviceTimeout(f"read now of meter {meter_id}: {answer.get('error') or 'no reply'}",
                                error_code=answer.get("code") or "collector.read_failed", params=answer.get("params"))
        return {"ts": answer.get("ts"), **(answer.get("values") or {})}

    async def call(self, method: str, **kwargs: Any) -> None:
        gateway_id = self.target.gateway.id
        payload = {k: _wire(v) for k, v in kwargs.items()}
        job = submit_command(gateway_id, self.target.meter_id, method, payload)
        reply = await asyncio.to_thread(wait_command, job, COLLECTOR_WAIT)
        if reply is None:
            raise DeviceTimeout(f"the collector of gateway {gateway_id} did not answer within {COLLECTOR_WAIT}s",
                                error_code="collector.no_answer", params={"seconds": COLLECTOR_WAIT})
        self._fenced(reply)
        if not reply.get("ok"):
            code = {"error_code": reply.get("code") or "collector.failed", "params": reply.get("params")}
            if reply.get("retryable", True):
                raise DeviceTimeout(reply.get("error") or "collector reported a transient failure", **code)
            raise DeviceRefused(reply.get("error") or "the device refused the command", **code)


class DirectLink:
    """Talks to the device over an open transport (the caller holds the bus lease)."""

    via = "worker"

    def __init__(self, target: Target, driver: Any, transport: Any) -> None:
        self.target, self.driver, self.transport = target, driver, transport

    async def read(self) -> dict[str, Any]:
        readings = await self.driver.read(self.transport, self.target.ref)
        for reading in readings:
            if reading.channel == self.target.channel:
                return {"ts": reading.timestamp.isoformat(), **reading.values}
        raise DeviceTimeout(f"no channel {self.target.channel} in the reply of device {self.target.ref.address}",
                            error_code="device.no_channel", params={"channel": self.target.channel})

    async def call(self, method: str, **kwargs: Any) -> None:
        try:
            await getattr(self.driver, method)(self.transport, self.target.ref, channel=self.target.channel, **kwargs)
        except UnsupportedCommand:
            raise
        except DeviceError as err:
            if err.retryable:
                raise
            raise DeviceRefused(str(err), where=f"meter {self.target.meter_id}", error_code=err.error_code,
                                params=err.params) from err


def open_transport(gateway: Gateway) -> Any:
    """An async transport to the gateway's bus (polled gateways only)."""
    from ..devices.onboarding import TRANSPORT_FRAMING
    from ..transports import open_transport as _open

    if gateway.framing not in TRANSPORT_FRAMING:
        raise UnsupportedCommand(f"gateway {gateway.name} ({gateway.framing}) cannot take polled commands yet",
                                 where=f"gateway {gateway.id}", error_code="gateway.polled_only",
                                 params={"framing": gateway.framing})
    return _open(gateway.host, gateway.port, TRANSPORT_FRAMING[gateway.framing])


@asynccontextmanager
async def direct(target: Target, driver: Any,
                 transport_factory: Callable[[Gateway], Any] | None = None) -> AsyncIterator[DirectLink]:
    """A :class:`DirectLink` over a transport opened for the block."""
    transport = (transport_factory or open_transport)(target.gateway)
    async with transport as bus:
        yield DirectLink(target, driver, bus)
