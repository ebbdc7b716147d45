"""Executing commands in rq workers through the device's driver, one bus at a time, one meter at a time.

One master per bus: when a collector owns the gateway (its Redis lease, ``meterhub.collector.jobs``), the
command is handed to that collector, which sends it between two device reads; otherwise the worker takes the
same lease with ``hold_bus`` for the transaction. Two processes never talk on one RS485 line at once.

One outstanding command per meter, in the order issued: only a meter's oldest open command is handed to rq
(``dispatch``), a job for a newer one steps back while an older one is open, and the end of a command hands
over the meter's next one at once. The job that sends a command owns it and heartbeats (``ownership``), so
a worker that dies mid-command is noticed in seconds and the command is resolved by reading the meter. A
meter-side top-up the meter refuses is re-synced from the meter's purchase count (``resync``).

Jobs: ``meterhub.commands.worker:dispatch`` (periodic: expire overdue commands, resolve orphaned ones,
enqueue each meter's next command), ``meterhub.commands.worker:execute`` (one command) and
``meterhub.commands.worker:execute_batch`` (commands handed over together, side by side).
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import exists, or_, select, update
from sqlalchemy.orm import Session, aliased

from ..db import service_session
from ..devices.models import Device, Gateway, Meter
from ..driver.base import DeviceRef
from ..models import utcnow
from ..protocols.errors import UnsupportedCommand
from ..collector.jobs import bus_owner, hold_bus
from ..collector.leases import stale_gateways
from ..redis_conn import get_queue
from . import ownership, resync
from .links import CollectorLink, DeviceRefused, Target, direct
from .messages import Failure, failure, from_error
from .models import OPEN_STATES, Command
from .service import expire_overdue, transition
from .verify import purchase_count, shown

log = logging.getLogger(__name__)
STALE_ENQUEUE = timedelta(minutes=10)
EXECUTE_TIMEOUT = 300  # seconds rq gives one command job (a re-sync writes several top-ups)
BATCH_SIZE = 50  # commands handed to rq together run in one job (execute_batch) ...
BATCH_THREADS = 6  # ... this many side by side (two service sessions each, within the engine's pool of 15)


def enqueue(command_ids: list[int], delay: timedelta | None = None) -> None:
    """Hand commands to the rq ``commands`` queue (after their rows are committed); records their job ids.

    Several at once (a burst of trips, ``dispatch``, a batch) go in jobs of up to :data:`BATCH_SIZE` that run
    them side by side (:func:`execute_batch`): one forked work horse instead of one per command, and the
    commands of different buses no longer wait for each other (each bus's owner still talks to one meter at a
    time). A delayed retry stays one job per command."""
    queue = get_queue("commands")
    jobs: dict[int, str] = {}
    if delay or len(command_ids) == 1:
        for command_id in command_ids:
            job_id = f"command-{command_id}-{uuid.uuid4().hex[:12]}"
            options = {"job_id": job_id, "job_timeout": EXECUTE_TIMEOUT, "description": f"command {command_id}"}
            if delay:
                queue.enqueue_in(delay, "meterhub.jobs.run", "meterhub.commands.worker:execute",
                                 command_id=command_id, **options)
            else:
                queue.enqueue("meterhub.jobs.run", "meterhub.commands.worker:execute", command_id=command_id,
                              **options)
            jobs[command_id] = job_id
    else:
        for start in range(0, len(command_ids), BATCH_SIZE):
            ids = list(command_ids[start:start + BATCH_SIZE])
            job_id = f"commands-{ids[0]}-{uuid.uuid4().hex[:12]}"
            rounds = -(-len(ids) // BATCH_THREADS)
            queue.enqueue("meterhub.jobs.run", "meterhub.commands.worker:execute_batch", command_ids=ids,
                          job_id=job_id, job_timeout=min(EXECUTE_TIMEOUT * rounds, 3600),
                          description=f"commands {ids[0]}..{ids[-1]} ({len(ids)})")
            jobs.update(dict.fromkeys(ids, job_id))
    if jobs:
        with service_session() as session:
            for command_id, job_id in jobs.items():
                session.execute(update(Command).where(Command.id == command_id, Command.state == "queued")
                                .values(job_id=job_id))


def execute_batch(command_ids: list[int]) -> dict[int, str]:
    """rq job: :func:`execute` each command, up to :data:`BATCH_THREADS` at once; their new states.

    A command whose thread fails stays ``queued`` with this job's id: the sweep enqueues it again once the job
    has finished (``ownership``), as for a single command's job that died."""
    from concurrent.futures import ThreadPoolExecutor

    from flask import current_app

    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def one(command_id: int) -> str:
        with app.app_context():
            try:
                return execute(command_id)
            except Exception:  # noqa: BLE001 - the others go on; the sweep re-queues this one
                log.exception("command %s failed in its batch", command_id)
                return "error"

    with ThreadPoolExecutor(max_workers=min(BATCH_THREADS, len(command_ids)) or 1,
                            thread_name_prefix="command") as pool:
        return dict(zip(command_ids, pool.map(one, command_ids)))


def _heads(session: Session, *conditions: Any, limit: int = 5000) -> list[Command]:
    """Queued commands that are their meter's oldest open one, not (recently) handed to rq; locked."""
    older = aliased(Command)
    waits = exists().where(older.meter_id == Command.meter_id, older.state.in_(OPEN_STATES), older.id < Command.id)
    return list(session.execute(
        select(Command).where(Command.state == "queued", ~waits, *conditions,
                              or_(Command.enqueued_at.is_(None), Command.enqueued_at < utcnow() - STALE_ENQUEUE))
        .order_by(Command.id).limit(limit).with_for_update(skip_locked=True)
    ).scalars())


def dispatch(limit: int = 5000) -> list[int]:
    """Expire overdue commands, resolve orphaned ones, enqueue each meter's next command; never drops one."""
    with service_session() as session:
        expire_overdue(session)
        swept = ownership.sweep(session)
        if swept["orphaned"] or swept["lost"]:
            log.warning("commands: %d orphaned by a dead worker, %d lost rq jobs; queued again",
                        len(swept["orphaned"]), len(swept["lost"]))
        rows = _heads(session, limit=limit)
        for command in rows:
            command.enqueued_at = utcnow()
        ids = [c.id for c in rows]
    enqueue(ids)
    return ids


def hand_over(meter_id: int) -> list[int]:
    """Enqueue the meter's next command, if it has one waiting (after one of its commands ended)."""
    return hand_over_meters([meter_id])


def hand_over_meters(meter_ids: list[int], *, here: bool = False) -> list[int]:
    """Enqueue the next waiting command of each of ``meter_ids``, together (see :func:`enqueue`).

    ``here``: run them in the current rq job instead (a job of the ``commands`` queue, such as the hand-over
    after a top-up): no second job to wait for; the commands carry this job's id for the lost-job sweep."""
    from rq import get_current_job

    job = get_current_job() if here else None
    with service_session() as session:
        rows = _heads(session, Command.meter_id.in_(sorted(set(meter_ids))))
        for command in rows:
            command.enqueued_at = utcnow()
            if job is not None:
                command.job_id = job.id
        ids = [c.id for c in rows]
    if ids and job is not None:
        execute_batch(ids)
    elif ids:
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


@dataclass
class Outcome:
    """What one job achieved: an error (``permanent`` or transient), details, earlier writes re-synced."""

    error: Failure | None = None
    permanent: bool = False
    detail: dict[str, Any] = field(default_factory=dict)
    resynced: list[int] = field(default_factory=list)
    meter_count: int | None = None
    needs_person: bool = False
    fences: list[Any] = field(default_factory=list)  # leases.Fence of each bus exchange: checked when recorded


def _target(session: Session, command: Command) -> Target:
    device, gateway = session.get(Device, command.device_id), session.get(Gateway, command.gateway_id)
    meter = session.get(Meter, command.meter_id)
    return Target(command.id, command.group_id, meter.id, command.kind, dict(command.params), device.driver_key,
                  DeviceRef(address=device.address, config=dict(device.config), serial=device.serial), meter.channel,
                  Gateway(id=gateway.id, name=gateway.name, host=gateway.host, port=gateway.port,
                          framing=gateway.framing))


def _waits_for_older(session: Session, command: Command) -> bool:
    return session.execute(select(Command.id).where(
        Command.meter_id == command.meter_id, Command.state.in_(OPEN_STATES), Command.id < command.id).limit(1)
    ).scalar() is not None


def execute(command_id: int, *, registry: dict[str, Any] | None = None,
            transport_factory: Callable[[Gateway], Any] | None = None) -> str:
    """Send one queued command through its driver (holding the bus lock); returns the new state."""
    me = ownership.worker_id()
    with service_session() as session:
        command = session.execute(select(Command).where(Command.id == command_id).with_for_update()).scalar()
        if command is None or command.state != "queued":
            return command.state if command else "missing"
        if command.expires_at < utcnow():
            expired = failure("command.expired_before_sending", "time-to-live passed before sending")
            transition(session, command, "expired", error=expired)
            if command.kind == "write_topup":
                resync.raise_not_on_meter(session, command, expired)
            meter_id = command.meter_id
        elif _waits_for_older(session, command):
            command.enqueued_at, command.job_id = None, None  # handed over when the older one ends
            log.info("command %s waits for an older command of meter %s", command_id, command.meter_id)
            return "queued"
        else:
            verify = command.verify_first
            transition(session, command, "sent", detail={"owner": me, "verify_first": verify})
            command.owner, command.heartbeat_at, command.verify_first = me, utcnow(), False
            target = _target(session, command)
            meter_id = None
    if meter_id is not None:
        return _finished(command_id, meter_id)
    with ownership.heartbeat("commands", command_id, me):
        outcome = _carry_out(target, verify, registry, transport_factory)
    return _record(target, me, outcome)


def _carry_out(target: Target, verify: bool, registry: dict[str, Any] | None,
               transport_factory: Callable[[Gateway], Any] | None) -> Outcome:
    """Talk to the meter; every error becomes part of the outcome."""
    try:
        if registry is None:
            from ..plugins import driver_registry

            registry = driver_registry()
        driver = registry.get(target.driver_key)
        if driver is None:
            raise UnsupportedCommand(f"driver {target.driver_key!r} is not installed", where=f"device {target.ref.address}",
                                     error_code="driver.not_installed", params={"driver": target.driver_key})
        owner = bus_owner(target.gateway.id) if transport_factory is None else None
        if owner:
            log.info("command %s: the bus of gateway %s is held by %s; asking it", target.command_id,
                     target.gateway.id, owner)
            link = CollectorLink(target)
            outcome = asyncio.run(_steps(link, target, verify))
            outcome.fences = link.fences
            return outcome
        with hold_bus(target.gateway.id, owner=f"worker:{os.getpid()}:{target.command_id}") as fence:
            outcome = asyncio.run(_direct_steps(target, driver, verify, transport_factory))
            outcome.fences = [fence]
            return outcome
    except UnsupportedCommand as err:
        return Outcome(from_error(err), permanent=True)
    except Exception as err:  # transient: timeouts, CRC, busy bus — retried while attempts and TTL remain
        return Outcome(from_error(err))


async def _direct_steps(target: Target, driver: Any, verify: bool,
                        transport_factory: Callable[[Gateway], Any] | None) -> Outcome:
    async with direct(target, driver, transport_factory) as link:
        return await _steps(link, target, verify)


async def _steps(link: Any, target: Target, verify: bool) -> Outcome:
    """Verify (after an orphaned send), send, and re-sync a refused top-up."""
    if target.kind == "read_now":
        values = await link.read()
        detail = {"via": link.via, "ts": values.pop("ts", None), "values": {k: _plain(v) for k, v in values.items()}}
        return Outcome(detail=detail)
    if verify:
        values = await link.read()
        if shown(target.kind, target.params, values):
            return Outcome(detail={"via": link.via, "verified": "the meter already shows it",
                                   "purchase_count": _plain(values.get("purchase_count"))})
    try:
        for method, kwargs in driver_calls(target.kind, target.params):
            await link.call(method, **kwargs)
    except DeviceRefused as err:
        if target.kind != "write_topup":
            raise
        return await _resync(link, target, str(err))
    return Outcome(detail={"via": link.via})


async def _resync(link: Any, target: Target, refusal: str) -> Outcome:
    """The meter refused a top-up write: read its count, then write what it misses, in order."""
    count = purchase_count(await link.read())
    if count is None:
        return Outcome(failure("topup.refused_no_count",
                               f"the meter refused the top-up ({refusal}) and reports no purchase count"),
                       permanent=True, needs_person=True)
    with service_session() as session:
        plan = resync.plan(session, session.get(Command, target.command_id), count)
    if plan.applied:
        return Outcome(detail={"via": link.via, "verified": "already on the meter", "meter_count": count},
                       meter_count=count)
    if plan.problem:
        return Outcome(plan.problem, permanent=True, meter_count=count, needs_person=True)
    done: list[int] = []
    for number, amount, carrier in plan.writes:
        try:
            await link.call("write_topup", amount=amount, purchase_count=number)
        except DeviceRefused as err:
            return Outcome(failure("topup.resync_refused", f"re-sync: the meter refused purchase count {number}: {err}",
                                   count=number), permanent=True, resynced=done, meter_count=count, needs_person=True)
        except Exception as err:
            return Outcome(failure("topup.resync_interrupted", f"re-sync interrupted at purchase count {number}: "
                                   f"{type(err).__name__}: {err}", count=number), resynced=done, meter_count=count)
        if carrier != target.command_id:
            done.append(carrier)
    log.warning("meter %s re-synced from purchase count %s: wrote %s", target.meter_id, count,
                [n for n, _, _ in plan.writes])
    return Outcome(detail={"via": link.via, "resync_from": count, "written": [n for n, _, _ in plan.writes]},
                   resynced=done, meter_count=count)


def _plain(value: Any) -> Any:
    return value if isinstance(value, bool | int | float | str) or value is None else str(value)


def _record(target: Target, me: str, outcome: Outcome) -> str:
    """Store the outcome on the command (unless the sweep took it over meanwhile); hand over the meter."""
    retry_in = timedelta(0)
    with service_session() as session:
        command = session.execute(select(Command).where(Command.id == target.command_id).with_for_update()).scalar_one()
        if outcome.error is None and (stale := stale_gateways(session, outcome.fences)):
            # the bus was granted to another owner since this result was produced: never confirm on it
            log.warning("command %s: result of a stale bus owner refused (gateways %s, fences %s)", command.id,
                        sorted(stale), outcome.fences)
            outcome = Outcome(failure("command.stale_lease", "result refused: the bus lease moved to another owner "
                                      "(epoch) before it was recorded; the meter is read before the command is "
                                      "sent again"))
            command.verify_first = True
        for earlier in outcome.resynced:
            resync.mark_resynced(session, earlier, by=command.id)
        if command.state != "sent" or command.owner != me:
            log.warning("command %s was taken over while %s sent it (now %s); its outcome is not recorded: %s",
                        command.id, me, command.state, outcome.error.text if outcome.error else "done")
            return command.state
        if outcome.error is None:
            transition(session, command, "confirmed", detail=outcome.detail)
            _follow(session.get(Meter, command.meter_id), command.kind, target.params)
            if command.kind == "write_topup":
                resync.clear_not_on_meter(session, command)
        elif not outcome.permanent and command.attempts < command.max_attempts and command.expires_at > utcnow():
            transition(session, command, "queued", error=outcome.error)
            command.enqueued_at = utcnow()
            retry_in = timedelta(seconds=5 * 2 ** command.attempts)
        else:
            transition(session, command, "failed", error=outcome.error)
            if command.kind == "write_topup":
                resync.raise_not_on_meter(session, command, outcome.error, outcome.meter_count)
        state = command.state
    if state == "queued":
        enqueue([target.command_id], delay=retry_in)
        return state
    return _finished(target.command_id, target.meter_id)


def _follow(meter: Meter, kind: str, params: dict[str, Any]) -> None:
    """A confirmed relay command sets the meter's known relay state."""
    if kind in ("switch", "resume_prepaid"):
        meter.relay_closed = bool(params["closed"])
    elif kind == "valve":
        meter.relay_closed = bool(params["open"])
    elif kind == "keep_power" and params.get("on", True):
        meter.relay_closed = True


def _finished(command_id: int, meter_id: int) -> str:
    """After a final state: fire ``command_done`` and hand the meter's next command to rq."""
    with service_session() as session:
        state = _done(session.get(Command, command_id))
    try:
        hand_over(meter_id)
    except Exception as err:  # Redis down: dispatch hands it over later
        log.warning("meter %s: next command not handed over now (%s); dispatch will", meter_id, err)
    return state

def _done(command: Command) -> str:
    """Fire ``command_done`` for a final state (plugin failures are logged, never raised)."""
    try:
        from ..plugins import get_plugin_manager

        get_plugin_manager().hook.command_done(command=command)
    except Exception:
        log.exception("a command_done hook failed for command %s", command.id)
    return command.state
