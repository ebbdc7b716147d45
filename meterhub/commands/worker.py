"""Executing commands in rq workers through the device's driver, one bus at a time.

Bus lock: ``<REDIS_NAMESPACE>:bus:<gateway_id>`` (a redis-py ``Lock``, see :func:`bus_lock`). The
collector must hold the same lock while it talks on a gateway, so two processes never share one RS485
line at once.

Jobs: ``meterhub.commands.worker:dispatch`` (periodic: enqueue queued commands, expire overdue ones) and
``meterhub.commands.worker:execute`` (one command).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from redis.lock import Lock
from sqlalchemy import or_, select

from ..db import service_session
from ..devices.models import Device, Gateway, Meter
from ..driver.base import DeviceRef
from ..models import utcnow
from ..protocols.errors import UnsupportedCommand
from ..redis_conn import get_queue, get_redis, redis_key
from .models import Command
from .service import expire_overdue, transition

log = logging.getLogger(__name__)
LOCK_TIMEOUT = 30  # seconds a bus may be held by one command
LOCK_WAIT = 60
STALE_ENQUEUE = timedelta(minutes=10)
FRAMING = {"modbus-tcp": "tcp", "modbus-rtu-over-tcp": "rtu", "cjt188-over-tcp": "cjt188"}


def bus_lock_name(gateway_id: int) -> str:
    """The Redis key of a gateway's bus lock (shared with the collector)."""
    return redis_key("bus", gateway_id)


def bus_lock(gateway_id: int) -> Lock:
    """The lock that serialises every conversation on one gateway's bus."""
    return get_redis().lock(bus_lock_name(gateway_id), timeout=LOCK_TIMEOUT, blocking_timeout=LOCK_WAIT)


def enqueue(command_ids: list[int], delay: timedelta | None = None) -> None:
    """Hand commands to the rq ``commands`` queue (after their rows are committed)."""
    queue = get_queue("commands")
    for command_id in command_ids:
        if delay:
            queue.enqueue_in(delay, "meterhub.jobs.run", "meterhub.commands.worker:execute", command_id=command_id)
        else:
            queue.enqueue("meterhub.jobs.run", "meterhub.commands.worker:execute", command_id=command_id)


def dispatch(limit: int = 5000) -> list[int]:
    """Expire overdue commands and enqueue queued ones not (recently) enqueued; never drops a command."""
    with service_session() as session:
        expire_overdue(session)
        rows = session.execute(
            select(Command).where(Command.state == "queued", or_(Command.enqueued_at.is_(None),
                                                                 Command.enqueued_at < utcnow() - STALE_ENQUEUE))
            .order_by(Command.id).limit(limit).with_for_update(skip_locked=True)
        ).scalars().all()
        for command in rows:
            command.enqueued_at = utcnow()
        ids = [c.id for c in rows]
    enqueue(ids)
    return ids


async def call_driver(driver: Any, transport: Any, device: DeviceRef, channel: int, kind: str,
                      params: dict[str, Any]) -> dict[str, Any]:
    """Run one command kind through the driver; returns details for the audit log."""
    if kind == "switch":
        await driver.switch(transport, device, channel, bool(params["closed"]))
    elif kind == "valve":
        await driver.valve(transport, device, channel, bool(params["open"]))
    elif kind == "keep_power":
        await driver.keep_power(transport, device, channel, bool(params.get("on", True)))
    elif kind == "resume_prepaid":
        await driver.keep_power(transport, device, channel, False)
        await driver.switch(transport, device, channel, bool(params["closed"]))
    elif kind == "set_prices":
        await driver.set_prices(transport, device, channel, [Decimal(p) for p in params["prices"]])
    elif kind == "set_thresholds":
        await driver.set_thresholds(transport, device, channel, Decimal(params["alarm1"]), Decimal(params["alarm2"]),
                                    Decimal(params["overdraft"]))
    elif kind == "set_overload_limit":
        await driver.set_overload_limit(transport, device, channel, Decimal(params["limit_kw"]))
    elif kind == "write_topup":
        await driver.write_topup(transport, device, channel, Decimal(params["amount"]), int(params["purchase_count"]))
    elif kind == "read_now":
        readings = await driver.read(transport, device)
        return {"channels": len(readings)}
    else:
        raise UnsupportedCommand(f"no driver call for command {kind!r}", where=f"device {device.address}")
    return {}


def _open_transport(gateway: Gateway) -> Any:
    from ..transports import open_transport

    if gateway.framing not in FRAMING:
        raise UnsupportedCommand(f"gateway {gateway.name} ({gateway.framing}) cannot take polled commands yet",
                                 where=f"gateway {gateway.id}")
    return open_transport(gateway.host, gateway.port, FRAMING[gateway.framing])


def execute(command_id: int, *, registry: dict[str, Any] | None = None,
            transport_factory: Callable[[Gateway], Any] | None = None) -> str:
    """Send one queued command through its driver (holding the bus lock); returns the new state."""
    with service_session() as session:
        command = session.execute(select(Command).where(Command.id == command_id).with_for_update()).scalar()
        if command is None or command.state != "queued":
            return command.state if command else "missing"
        if command.expires_at < utcnow():
            transition(session, command, "expired", error="time-to-live passed before sending")
            return _done(command)
        transition(session, command, "sent")
        device, gateway = session.get(Device, command.device_id), session.get(Gateway, command.gateway_id)
        meter = session.get(Meter, command.meter_id)
        ref = DeviceRef(address=device.address, config=dict(device.config), serial=device.serial)
        driver_key, channel, kind, params = device.driver_key, meter.channel, command.kind, dict(command.params)
        gateway_snapshot = Gateway(id=gateway.id, name=gateway.name, host=gateway.host, port=gateway.port,
                                   framing=gateway.framing)
    error, permanent, detail = "", False, {}
    try:
        if registry is None:
            from ..plugins import driver_registry

            registry = driver_registry()
        driver = registry.get(driver_key)
        if driver is None:
            raise UnsupportedCommand(f"driver {driver_key!r} is not installed", where=f"device {ref.address}")
        lock = bus_lock(gateway_snapshot.id)
        if not lock.acquire():
            raise TimeoutError(f"bus of gateway {gateway_snapshot.name} busy for {LOCK_WAIT}s")
        try:
            detail = asyncio.run(_send(driver, gateway_snapshot, ref, channel, kind, params, transport_factory))
        finally:
            try:
                lock.release()
            except Exception:  # the lock expired meanwhile; nothing to release
                log.warning("bus lock of gateway %s expired during command %s", gateway_snapshot.id, command_id)
    except UnsupportedCommand as err:
        error, permanent = str(err), True
    except Exception as err:  # transient: timeouts, CRC, busy bus — retried while attempts and TTL remain
        error = f"{type(err).__name__}: {err}"
    with service_session() as session:
        command = session.execute(select(Command).where(Command.id == command_id).with_for_update()).scalar_one()
        if not error:
            transition(session, command, "confirmed", detail=detail)
            meter = session.get(Meter, command.meter_id)
            if kind in ("switch", "resume_prepaid"):
                meter.relay_closed = bool(params["closed"])
            elif kind == "valve":
                meter.relay_closed = bool(params["open"])
            elif kind == "keep_power" and params.get("on", True):
                meter.relay_closed = True
        elif not permanent and command.attempts < command.max_attempts and command.expires_at > utcnow():
            transition(session, command, "queued", error=error)
            command.enqueued_at = utcnow()
            retry_in = timedelta(seconds=5 * 2 ** command.attempts)
        else:
            transition(session, command, "failed", error=error)
        state = command.state
    if state == "queued":
        enqueue([command_id], delay=retry_in)
    else:
        with service_session() as session:
            _done(session.get(Command, command_id))
    return state


async def _send(driver: Any, gateway: Gateway, ref: DeviceRef, channel: int, kind: str, params: dict[str, Any],
                transport_factory: Callable[[Gateway], Any] | None) -> dict[str, Any]:
    transport = (transport_factory or _open_transport)(gateway)
    async with transport as bus:
        return await call_driver(driver, bus, ref, channel, kind, params)


def _done(command: Command) -> str:
    """Fire ``command_done`` for a final state (plugin failures are logged, never raised)."""
    try:
        from ..plugins import get_plugin_manager

        get_plugin_manager().hook.command_done(command=command)
    except Exception:
        log.exception("a command_done hook failed for command %s", command.id)
    return command.state
