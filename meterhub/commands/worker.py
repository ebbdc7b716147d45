"""Executing commands in rq workers through the device's driver, one bus at a time.

One master per bus: when a collector owns the gateway (its Redis lease, ``meterhub.collector.jobs``), the
command is handed to that collector, which sends it between two device reads; otherwise the worker takes the
same lease with ``hold_bus`` for the transaction. Two processes never talk on one RS485 line at once.

Jobs: ``meterhub.commands.worker:dispatch`` (periodic: enqueue queued commands, expire overdue ones) and
``meterhub.commands.worker:execute`` (one command).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import or_, select

from ..db import service_session
from ..devices.models import Device, Gateway, Meter
from ..driver.base import DeviceRef
from ..models import utcnow
from ..protocols.errors import UnsupportedCommand
from ..collector.jobs import bus_owner, hold_bus, request_read_now, submit_command, wait_command, wait_read_now
from ..devices.onboarding import TRANSPORT_FRAMING
from ..redis_conn import get_queue
from .models import Command
from .service import expire_overdue, transition

log = logging.getLogger(__name__)
COLLECTOR_WAIT = 30  # seconds to wait for the owning collector's reply
STALE_ENQUEUE = timedelta(minutes=10)


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


def driver_calls(kind: str, params: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The driver methods (name, keyword arguments) that carry out one command kind, in order."""
    if kind == "switch":
        return [("switch", {"closed": bool(params["closed"])})]
    if kind == "valve":
        return [("valve", {"open": bool(params["open"])})]
    if kind == "keep_power":
        return [("keep_power", {"on": bool(params.get("on", True))})]
    if kind == "resume_prepaid":
        return [("keep_power", {"on": False}), ("switch", {"closed": bool(params["closed"])})]
    if kind == "set_prices":
        return [("set_prices", {"prices": [Decimal(p) for p in params["prices"]]})]
    if kind == "set_thresholds":
        return [("set_thresholds", {k: Decimal(params[k]) for k in ("alarm1", "alarm2", "overdraft")})]
    if kind == "set_overload_limit":
        return [("set_overload_limit", {"limit_kw": Decimal(params["limit_kw"])})]
    if kind == "write_topup":
        return [("write_topup", {"amount": Decimal(params["amount"]), "purchase_count": int(params["purchase_count"])})]
    raise UnsupportedCommand(f"no driver call for command {kind!r}")


async def call_driver(driver: Any, transport: Any, device: DeviceRef, channel: int, kind: str,
                      params: dict[str, Any]) -> dict[str, Any]:
    """Run one command kind through the driver on an open transport; returns details for the audit log."""
    if kind == "read_now":
        readings = await driver.read(transport, device)
        return {"channels": len(readings)}
    for method, kwargs in driver_calls(kind, params):
        await getattr(driver, method)(transport, device, channel=channel, **kwargs)
    return {}


def _through_collector(gateway_id: int, meter_id: int, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Hand the command to the collector that owns the bus and wait for its reply."""
    if kind == "read_now":
        result = wait_read_now(request_read_now([meter_id]), timeout=COLLECTOR_WAIT)
        answer = result.meters.get(meter_id) or {"ok": False, "error": "no reply"}
        if not answer.get("ok"):
            raise TimeoutError(f"read now of meter {meter_id}: {answer.get('error') or 'no reply'}")
        return {"via": "collector", "ts": answer.get("ts"), "values": answer.get("values") or {}}
    for method, kwargs in driver_calls(kind, params):
        payload = {k: (v if isinstance(v, bool | int) else [str(x) for x in v] if isinstance(v, list) else str(v))
                   for k, v in kwargs.items()}
        reply = wait_command(submit_command(gateway_id, meter_id, method, payload), timeout=COLLECTOR_WAIT)
        if reply is None:
            raise TimeoutError(f"the collector of gateway {gateway_id} did not answer within {COLLECTOR_WAIT}s")
        if not reply.get("ok"):
            if reply.get("retryable", True):
                raise TimeoutError(reply.get("error") or "collector reported a transient failure")
            raise UnsupportedCommand(reply.get("error") or "the device refused the command")
    return {"via": "collector"}


def _open_transport(gateway: Gateway) -> Any:
    from ..transports import open_transport

    if gateway.framing not in TRANSPORT_FRAMING:
        raise UnsupportedCommand(f"gateway {gateway.name} ({gateway.framing}) cannot take polled commands yet",
                                 where=f"gateway {gateway.id}")
    return open_transport(gateway.host, gateway.port, TRANSPORT_FRAMING[gateway.framing])


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
        meter_id = meter.id
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
        if transport_factory is None and bus_owner(gateway_snapshot.id):
            detail = _through_collector(gateway_snapshot.id, meter_id, kind, params)
        else:
            with hold_bus(gateway_snapshot.id, owner=f"worker:{os.getpid()}:{command_id}"):
                detail = asyncio.run(_send(driver, gateway_snapshot, ref, channel, kind, params, transport_factory))
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
