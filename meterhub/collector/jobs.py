"""Work for a bus from other processes: "read now", device commands, and who owns a bus.

Everything that talks to a bus goes through the collector that owns it, so an RS485 line never has two
masters. Ownership of a polled bus is a lease row in PostgreSQL with a fencing epoch (``leases.py``); the
4G dial-in listener's attachments keep a Redis lease (``<ns>:collector:lease:<gateway_id>``), which
``bus_owner`` also reports. Other processes queue work in the gateway's list
``<ns>:collector:bus:<gateway_id>:jobs``; the owning collector's bus task runs it between two device reads.

    rid = request_read_now([meter_id, ...])          # web, API, CLI (app context)
    result = wait_read_now(rid, timeout=10)           # ReadNowResult: per meter ok/values/error

    # a command worker (meterhub.commands), per command:
    if bus_owner(gateway_id):                         # a collector polls this bus: let it send the command
        job = submit_command(gateway_id, meter_id, "switch", {"closed": False})
        reply = wait_command(job, timeout=30)          # {"ok": bool, "error": str, "retryable": bool} | None
    else:                                              # no collector: take the bus yourself for the transaction
        with hold_bus(gateway_id, owner="worker:<id>") as fence:   # leases.Fence: check it when storing
            ... open_transport(...) and call the driver ...
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from flask import Flask, current_app

from meterhub.errors import MeterhubError

LEASE_TTL_S = 30.0  # the 4G listener's Redis lease and a worker's hold_bus
JOB_TTL_S = 60.0
REPLY_TTL_S = 600


class BusBusy(MeterhubError):
    """Another process holds the bus; try again later or queue the work for its collector."""


def _app(app: Flask | None) -> Flask:
    return app or current_app._get_current_object()  # type: ignore[attr-defined]


def _redis(app: Flask) -> redis.Redis:
    from meterhub.redis_conn import get_redis

    return get_redis(app)


def namespace(app: Flask | None = None) -> str:
    return str(_app(app).config["REDIS_NAMESPACE"])


def jobs_key(ns: str, gateway_id: int) -> str:
    return f"{ns}:collector:bus:{gateway_id}:jobs"


def lease_key(ns: str, gateway_id: int) -> str:
    return f"{ns}:collector:lease:{gateway_id}"


def reply_keys(ns: str, request_id: str) -> tuple[str, str, str]:
    """(meta hash, results hash, done list) of a read-now request or a command job."""
    base = f"{ns}:collector:reply:{request_id}"
    return f"{base}:meta", f"{base}:results", f"{base}:done"


def bus_owner(gateway_id: int, app: Flask | None = None) -> str | None:
    """The id of the process that holds the bus now (a collector, a worker or the 4G listener), or None."""
    from meterhub.collector import leases
    from meterhub.db import service_engine

    app = _app(app)
    with service_engine(app.config["SERVICE_DATABASE_URL"]).connect() as conn:
        held = leases.holder(conn, gateway_id)
    if held is not None:
        return held[0]
    value = _redis(app).get(lease_key(namespace(app), gateway_id))
    return value.decode() if isinstance(value, bytes) else value


@contextmanager
def hold_bus(gateway_id: int, owner: str, ttl_s: float = LEASE_TTL_S, app: Flask | None = None) -> Iterator[Any]:
    """Hold a gateway's bus for direct access (when no collector owns it); BusBusy if somebody does.

    Takes the PostgreSQL lease (a new epoch; yields its ``leases.Fence``) and the Redis key the 4G listener
    uses. The lease lasts ``ttl_s``; the caller's whole use of the bus must fit in it (a command job's
    driver calls take seconds)."""
    from meterhub.collector import leases
    from meterhub.db import service_engine

    app = _app(app)
    engine = service_engine(app.config["SERVICE_DATABASE_URL"])
    client, key = _redis(app), lease_key(namespace(app), gateway_id)
    if not client.set(key, owner, nx=True, px=int(ttl_s * 1000)):
        raise BusBusy(f"gateway {gateway_id} is held by {bus_owner(gateway_id, app)}; queue the work for it")
    try:
        with engine.begin() as conn:
            got = leases.acquire(conn, owner, [gateway_id], ttl_s)
        if gateway_id not in got:
            raise BusBusy(f"gateway {gateway_id} is held by {bus_owner(gateway_id, app)}; queue the work for it")
        try:
            yield leases.Fence(gateway_id, owner, got[gateway_id])
        finally:
            with engine.begin() as conn:
                leases.release(conn, owner, got)
    finally:
        client.eval("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
                    1, key, owner)


def _push(app: Flask, gateway_id: int, job: dict[str, Any]) -> None:
    client, key = _redis(app), jobs_key(namespace(app), gateway_id)
    pipe = client.pipeline()
    pipe.rpush(key, json.dumps(job))
    pipe.expire(key, int(JOB_TTL_S * 2))
    pipe.execute()


def request_read_now(meter_ids: list[int], app: Flask | None = None) -> str:
    """Ask the collectors to read these meters now (through their buses' queues); returns the request id."""
    from sqlalchemy import select

    from meterhub.db import service_session
    from meterhub.devices.models import Device, Meter

    app = _app(app)
    ids = sorted({int(m) for m in meter_ids})
    with service_session(app.config["SERVICE_DATABASE_URL"]) as session:
        rows = session.execute(select(Meter.id, Device.gateway_id).join(Device, Device.id == Meter.device_id)
                               .where(Meter.id.in_(ids or [-1]))).all()
    by_gateway: dict[int, list[int]] = {}
    for meter_id, gateway_id in rows:
        by_gateway.setdefault(gateway_id, []).append(meter_id)
    request_id = uuid.uuid4().hex
    meta, results, _ = reply_keys(namespace(app), request_id)
    client = _redis(app)
    pipe = client.pipeline()
    pipe.hset(meta, mapping={"parts": len(by_gateway), "meters": json.dumps(ids),
                             "gateways": json.dumps(sorted(by_gateway))})
    unknown = {str(m): json.dumps({"ok": False, "error": "no such meter"}) for m in set(ids) - {r[0] for r in rows}}
    if unknown:
        pipe.hset(results, mapping=unknown)
    pipe.expire(meta, REPLY_TTL_S).expire(results, REPLY_TTL_S)
    pipe.execute()
    for gateway_id, mids in by_gateway.items():
        _push(app, gateway_id, {"id": request_id, "kind": "read", "meter_ids": mids, "at": time.time()})
    return request_id


@dataclass
class ReadNowResult:
    """Per meter: ``{"ok": True, "ts": iso, "values": {...}}`` or ``{"ok": False, "error": "..."}``."""

    request_id: str
    complete: bool
    meters: dict[int, dict[str, Any]] = field(default_factory=dict)


def wait_read_now(request_id: str, timeout: float = 10.0, app: Flask | None = None) -> ReadNowResult:
    """Wait until every bus of the request answered, or ``timeout`` seconds; missing meters get an error."""
    app = _app(app)
    client = _redis(app)
    meta, results, done = reply_keys(namespace(app), request_id)
    info = client.hgetall(meta)
    if not info:
        raise MeterhubError(f"read-now request {request_id} is unknown or expired (replies are kept 10 minutes)")
    parts = int(info[b"parts"])
    meters = json.loads(info[b"meters"])
    deadline = time.monotonic() + timeout
    while (answered := client.llen(done)) < parts and time.monotonic() < deadline:
        time.sleep(0.02)
    stored = {int(k): json.loads(v) for k, v in client.hgetall(results).items()}
    for meter_id in meters:
        stored.setdefault(meter_id, {"ok": False, "error": f"no answer within {timeout:.0f} s; is a collector "
                                                           "running for this meter's gateway?",
                                     "code": "collector.no_answer", "params": {"seconds": round(timeout)}})
    return ReadNowResult(request_id, answered >= parts, stored)


def submit_command(gateway_id: int, meter_id: int, method: str, params: dict[str, Any],
                   app: Flask | None = None) -> str:
    """Queue a driver command (``switch``, ``valve``, ``write_topup`` …) for the bus's collector; job id."""
    app = _app(app)
    job_id = uuid.uuid4().hex
    _push(app, gateway_id, {"id": job_id, "kind": "command", "meter_ids": [meter_id], "method": method,
                            "params": params, "at": time.time()})
    return job_id


def wait_command(job_id: str, timeout: float = 30.0, app: Flask | None = None) -> dict[str, Any] | None:
    """The collector's reply to a command job, or None if none came within ``timeout`` seconds."""
    app = _app(app)
    client = _redis(app)
    _, results, done = reply_keys(namespace(app), job_id)
    if client.blpop([done], timeout=max(timeout, 0.01)) is None:
        return None
    raw = client.hget(results, "command")
    return json.loads(raw) if raw else None


async def send_reply(client: Any, ns: str, job: dict[str, Any], gateway_id: int, result: dict[str, Any]) -> None:
    """Write a bus owner's answer to a job where ``wait_read_now`` / ``wait_command`` look (an asyncio Redis client)."""
    _, results, done = reply_keys(ns, job["id"])
    pipe = client.pipeline()
    if job["kind"] == "read":
        failed = {"ok": False, "error": result.get("error", "failed"), "code": result.get("code") or "collector.failed",
                  "params": result.get("params") or {}}
        meters = result.get("meters") or {str(m): failed for m in job.get("meter_ids", [])}
        if result.get("fence"):
            meters = {k: {**v, "fence": result["fence"]} for k, v in meters.items()}
        pipe.hset(results, mapping={k: json.dumps(v) for k, v in meters.items()})
    else:
        pipe.hset(results, "command", json.dumps(result))
    pipe.rpush(done, gateway_id)
    pipe.expire(results, REPLY_TTL_S).expire(done, REPLY_TTL_S)
    await pipe.execute()
