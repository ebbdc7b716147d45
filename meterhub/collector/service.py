"""The collector process: loads its shard's gateways and devices, runs one BusPoller per bus, stores results.

    collector = Collector.from_app(app, shard=Shard.parse("0/4"))
    asyncio.run(collector.run())            # until collector.request_stop()

Every ``reload_s`` the gateway/device/meter lists are read again (service role) and pollers are started,
updated or stopped. A bus is polled only while this process holds its Redis lease (see ``jobs.py``), so
two collectors with overlapping shards, or a command worker holding the bus, never double-master a line.
Jobs for a bus ("read now", commands) are taken from its Redis list and run by its poller.

The process never ends on a transient fault: a reload that cannot reach the database or Redis is retried
with back-off while the pollers go on with what they have, a poller task that died is started again, and
readings stay buffered (bounded, see ``StorageSink``) until they are stored. Every 5 s each live bus
heartbeats (``liveness.publish``), which is how a dead or stuck collector is told from an offline gateway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from meterhub.collector import jobs as jobkeys
from meterhub.collector import liveness
from meterhub.collector.bus import BusDevice, BusJob, BusPoller, BusSpec
from meterhub.collector.limit import InflightLimit
from meterhub.collector.policy import Backoff, Quarantine, RetryPolicy
from meterhub.collector.schedule import DEFAULT_STAGGER_S, Shard, interval_seconds, stagger
from meterhub.collector.store import StorageSink
from meterhub.driver import DeviceRef

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 0.5
TICK_S = 5.0  # leases renewed, heartbeats published and dead poller tasks restarted this often
TRANSIENT = (OSError, aioredis.RedisError, SQLAlchemyError)
_RENEW = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[1] then redis.call('pexpire', key, ARGV[2]); out[i] = 1 else out[i] = 0 end
end
return out
"""

_TAKE_OVER = """
if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end
return 0
"""


def _dead_local_collector(holder: str) -> bool:
    """True when ``holder`` is a collector of this host whose process is gone (killed; its lease outlived it)."""
    kind, _, rest = holder.partition(":")
    host, _, rest = rest.partition(":")
    pid = rest.partition(":")[0]
    if kind != "collector" or host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def load_buses(session: Session, shard: Shard, registry: dict[str, Any],
               interval_s: float | None = None, only: set[int] | None = None
               ) -> dict[int, tuple[BusSpec, list[BusDevice]]]:
    """The polled buses of ``shard`` (optionally ``only`` these gateway ids): enabled gateways with a pollable
    framing, their devices and active meters."""
    from meterhub.devices.models import Device, Gateway, Meter
    from meterhub.devices.onboarding import TRANSPORT_FRAMING
    from meterhub.tenants.models import Property

    rows = session.execute(
        select(Gateway, Property.reading_interval_min).join(Property, Property.id == Gateway.property_id)
        .where(Gateway.enabled.is_(True), Gateway.framing.in_(list(TRANSPORT_FRAMING)),
               Gateway.id % shard.count == shard.index,
               Gateway.id.in_(sorted(only)) if only is not None else Gateway.id.isnot(None))
        .order_by(Gateway.id)).all()
    buses: dict[int, tuple[BusSpec, list[BusDevice]]] = {}
    for gateway, minutes in rows:
        bus = gateway.bus or {}
        spec = BusSpec(gateway.id, gateway.group_id, gateway.host, gateway.port, TRANSPORT_FRAMING[gateway.framing],
                       interval_s=interval_s or interval_seconds(minutes),
                       pause_s=float(bus.get("pause_ms", 0)) / 1000.0,
                       timeout_s=float(bus.get("timeout", DEFAULT_TIMEOUT_S)), name=f"gateway {gateway.name}")
        buses[gateway.id] = (spec, [])
    if not buses:
        return buses
    devices = session.execute(select(Device).where(Device.gateway_id.in_(list(buses)))
                              .order_by(Device.gateway_id, Device.id)).scalars().all()
    meters: dict[int, dict[int, int]] = {}
    for meter_id, device_id, channel in session.execute(
            select(Meter.id, Meter.device_id, Meter.channel)
            .where(Meter.device_id.in_([d.id for d in devices] or [-1]), Meter.active.is_(True))):
        meters.setdefault(device_id, {})[channel] = meter_id
    for device in devices:
        driver = registry.get(device.driver_key)
        if driver is None:
            log.warning("device %s: driver %s is not installed; not polled", device.id, device.driver_key)
            continue
        if device.id not in meters:
            continue
        ref = DeviceRef(address=device.address, config=dict(device.config or {}), serial=device.serial)
        buses[device.gateway_id][1].append(BusDevice(device.id, device.group_id, driver, ref, meters[device.id]))
    return buses


class Collector:
    """One collector process: a shard of gateways, one poller task per bus."""

    def __init__(self, *, engine: Engine, redis_url: str, namespace: str, shard: Shard | None = None,
                 registry: dict[str, Any] | None = None, interval_s: float | None = None,
                 stagger_s: float = DEFAULT_STAGGER_S, reload_s: float = 60.0, policy: RetryPolicy | None = None,
                 quarantine_s: float = 30.0, flush_s: float = 1.0, only: set[int] | None = None) -> None:
        if registry is None:
            from meterhub.plugins import driver_registry

            registry = driver_registry()
        self.engine, self.redis_url, self.ns = engine, redis_url, namespace
        self.shard, self.registry, self.interval_s = shard or Shard(), registry, interval_s
        self.stagger_s, self.reload_s, self.policy, self.quarantine_s = stagger_s, reload_s, policy, quarantine_s
        self.only = only
        self.owner = f"collector:{socket.gethostname()}:{os.getpid()}:{shard or Shard()}"
        self.sink = StorageSink(engine, flush_s=flush_s)
        self.pollers: dict[int, BusPoller] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.limit = InflightLimit()  # transactions in flight across this process's buses
        self.stop_event = asyncio.Event()
        self.redis: aioredis.Redis | None = None
        self.loaded = asyncio.Event()
        self._redis_down = False
        self.waiting: dict[int, tuple[BusSpec, list[BusDevice], float]] = {}  # buses whose lease is held

    @classmethod
    def from_app(cls, app: Any, **kwargs: Any) -> Collector:
        """A collector configured from a Flask app (service database URL, Redis URL and namespace)."""
        from meterhub.db import service_engine

        return cls(engine=service_engine(app.config["SERVICE_DATABASE_URL"]), redis_url=app.config["REDIS_URL"],
                   namespace=app.config["REDIS_NAMESPACE"], **kwargs)

    def request_stop(self) -> None:
        self.stop_event.set()

    async def run(self) -> None:
        """Run until ``request_stop()``: reload, leases, heartbeats, job intake, flushing; never ends on a fault."""
        self.redis = aioredis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=5)
        flusher = asyncio.create_task(self.sink.run(self.stop_event))
        intake = asyncio.create_task(self._intake())
        regulator = asyncio.create_task(self.limit.regulate())
        log.info("collector %s starting (shard %s)", self.owner, self.shard)
        retry = Backoff(first_s=1.0, max_s=30.0)
        try:
            while not self.stop_event.is_set():
                try:
                    await self.reload()
                except TRANSIENT as err:
                    wait = retry.next()
                    log.warning("collector %s: reloading the gateways failed (%s: %s); polling goes on with the "
                                "last list, next try in %.0f s", self.owner, type(err).__name__, err, wait)
                    deadline = time.monotonic() + wait
                else:
                    if retry.failures:
                        log.info("collector %s: gateways reloaded again", self.owner)
                    retry.reset()
                    self.loaded.set()
                    deadline = time.monotonic() + self.reload_s
                while not self.stop_event.is_set() and time.monotonic() < deadline:
                    await self._tick()
                    try:
                        await asyncio.wait_for(self.stop_event.wait(), min(TICK_S, self.reload_s))
                    except TimeoutError:
                        pass
        finally:
            self.stop_event.set()
            await self._stop_pollers(list(self.pollers))
            intake.cancel()
            regulator.cancel()
            await asyncio.gather(intake, regulator, return_exceptions=True)
            await flusher
            await self.redis.aclose()
            log.info("collector %s stopped: %s", self.owner, self.sink.stats)

    async def _tick(self) -> None:
        """Restart dead poller tasks, renew leases, heartbeat; a Redis fault is logged and tried next tick."""
        self._restart_dead_pollers()
        try:
            await self._take_waiting()
            await self._renew_leases()
            await self._heartbeat()
        except TRANSIENT as err:
            if not self._redis_down:
                log.warning("collector %s: Redis unavailable (%s: %s); polling and storing go on, leases and "
                            "heartbeats resume when it is back", self.owner, type(err).__name__, err)
            self._redis_down = True
        else:
            if self._redis_down:
                log.info("collector %s: Redis is back", self.owner)
            self._redis_down = False

    def _restart_dead_pollers(self) -> None:
        for gateway_id, task in list(self.tasks.items()):
            if not task.done():
                continue
            error = task.exception() if not task.cancelled() else None
            log.error("collector %s: the poller of gateway %s ended (%s); starting it again", self.owner,
                      gateway_id, f"{type(error).__name__}: {error}" if error else "cancelled")
            poller = self.pollers[gateway_id]
            fresh = BusPoller(poller.spec, poller.devices, self.sink, policy=self.policy, limit=self.limit,
                              quarantine=Quarantine(base_s=self.quarantine_s))
            self.pollers[gateway_id] = fresh
            self.tasks[gateway_id] = asyncio.create_task(fresh.run(), name=f"bus-{gateway_id}")

    async def reload(self) -> None:
        """Read the shard's buses from the database and start, update or stop pollers."""

        def load() -> dict[int, tuple[BusSpec, list[BusDevice]]]:
            with Session(self.engine, info={"service": True}) as session:
                return load_buses(session, self.shard, self.registry, self.interval_s, self.only)

        buses = await asyncio.to_thread(load)
        gone = [gid for gid in self.pollers if gid not in buses]
        await self._stop_pollers(gone)
        new = [gid for gid in buses if gid not in self.pollers]
        for position, (gateway_id, (spec, devices)) in enumerate(buses.items()):
            if gateway_id in self.pollers:
                self.pollers[gateway_id].update(spec, devices)
                continue
            first_delay = stagger(position, len(buses), spec.interval_s, self.stagger_s)
            if not await self._acquire(gateway_id):
                if gateway_id not in self.waiting:
                    log.info("gateway %s is held by %s; %s polls it once the lease is free", gateway_id,
                             await self.redis.get(jobkeys.lease_key(self.ns, gateway_id)), self.owner)  # type: ignore[union-attr]
                self.waiting[gateway_id] = (spec, devices, first_delay)
                continue
            self._start_poller(gateway_id, spec, devices, first_delay)
        for gateway_id in [gid for gid in self.waiting if gid not in buses or gid in self.pollers]:
            del self.waiting[gateway_id]
        if new or gone:
            log.info("collector %s: %d buses, %d devices (+%d, -%d)", self.owner, len(self.pollers),
                     sum(len(p.devices) for p in self.pollers.values()), len(new), len(gone))

    def _start_poller(self, gateway_id: int, spec: BusSpec, devices: list[BusDevice], first_delay_s: float) -> None:
        self.waiting.pop(gateway_id, None)
        poller = BusPoller(spec, devices, self.sink, policy=self.policy, limit=self.limit,
                           quarantine=Quarantine(base_s=self.quarantine_s), first_delay_s=first_delay_s)
        self.pollers[gateway_id] = poller
        self.tasks[gateway_id] = asyncio.create_task(poller.run(), name=f"bus-{gateway_id}")

    async def _take_waiting(self) -> None:
        """Start polling the shard's buses whose lease became free (its holder stopped or died)."""
        for gateway_id, (spec, devices, first_delay) in list(self.waiting.items()):
            if await self._acquire(gateway_id):
                log.info("collector %s: gateway %s is free again; polling it", self.owner, gateway_id)
                self._start_poller(gateway_id, spec, devices, first_delay)

    async def _stop_pollers(self, gateway_ids: list[int]) -> None:
        for gid in gateway_ids:
            self.pollers[gid].stop()
        await asyncio.gather(*(self.tasks[gid] for gid in gateway_ids), return_exceptions=True)
        assert self.redis is not None
        for gid in gateway_ids:
            del self.pollers[gid], self.tasks[gid]
            try:
                await self.redis.eval("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', "
                                      "KEYS[1]) end return 0", 1, jobkeys.lease_key(self.ns, gid), self.owner)  # type: ignore[misc]
            except TRANSIENT as err:  # the lease expires by itself
                log.warning("collector %s: could not release the lease of gateway %s (%s)", self.owner, gid, err)

    async def _acquire(self, gateway_id: int) -> bool:
        assert self.redis is not None
        key = jobkeys.lease_key(self.ns, gateway_id)
        ttl = int(jobkeys.LEASE_TTL_S * 1000)
        if await self.redis.set(key, self.owner, nx=True, px=ttl):
            return True
        holder = (await self.redis.get(key) or b"").decode()
        if holder == self.owner:
            return True
        if _dead_local_collector(holder) and await self.redis.eval(_TAKE_OVER, 1, key, holder, self.owner, ttl):  # type: ignore[misc]
            log.info("collector %s took over gateway %s from %s, which is no longer running", self.owner,
                     gateway_id, holder)
            return True
        return False

    async def _renew_leases(self) -> None:
        """Keep our leases; a lease that vanished (Redis restarted empty) is taken again, and a poller whose
        lease another process now holds stops."""
        assert self.redis is not None
        ids = list(self.pollers)
        if not ids:
            return
        keys = [jobkeys.lease_key(self.ns, gid) for gid in ids]
        kept = await self.redis.eval(_RENEW, len(keys), *keys, self.owner, int(jobkeys.LEASE_TTL_S * 1000))  # type: ignore[misc]
        lost = [gid for gid, ok in zip(ids, kept) if not ok and not await self._acquire(gid)]
        if lost:
            log.warning("collector %s lost the lease of gateways %s; stopping their pollers", self.owner, lost)
            await self._stop_pollers(lost)

    async def _heartbeat(self) -> None:
        assert self.redis is not None
        now = time.monotonic()
        state = {"owner": self.owner, "shard": str(self.shard), "buses": len(self.pollers), "at": time.time(),
                 "quarantined": sum(p.quarantine.count(now) for p in self.pollers.values()),
                 "down": sum(p.down for p in self.pollers.values()), "buffered": len(self.sink.pending.readings),
                 **self.sink.stats.__dict__}
        await self.redis.set(f"{self.ns}:collector:heartbeat:{self.owner}", json.dumps(state), ex=60)
        alive = [gid for gid, p in self.pollers.items()
                 if not self.tasks[gid].done() and now - p.alive_at < liveness.STALE_S]
        await liveness.publish(self.redis, self.ns, alive, self.owner)

    # --- jobs from other processes -----------------------------------------------------------------------
    async def _intake(self) -> None:
        """Move jobs from the buses' Redis lists to their pollers; reply when each is done."""
        assert self.redis is not None
        replies: set[asyncio.Task[None]] = set()
        while not self.stop_event.is_set():
            keys = [jobkeys.jobs_key(self.ns, gid) for gid in self.pollers]
            if not keys:
                await asyncio.sleep(0.5)
                continue
            try:
                item = await self.redis.blpop(keys, timeout=1)
            except TRANSIENT as err:
                log.debug("collector: Redis unavailable for jobs (%s); retrying", err)
                await asyncio.sleep(1.0)
                continue
            if item is None:
                continue
            key, raw = item
            gateway_id = int(key.decode().rsplit(":", 2)[-2])
            job = json.loads(raw)
            poller = self.pollers.get(gateway_id)
            if poller is None or time.time() - float(job.get("at", 0)) > jobkeys.JOB_TTL_S:
                result = {"ok": False, "error": "expired before the bus could take it"}
                await self._reply(job, gateway_id, asyncio.sleep(0, result))
                continue
            future = poller.submit(BusJob(job["kind"], [int(m) for m in job.get("meter_ids", [])],
                                          job.get("method", ""), job.get("params") or {}))
            task = asyncio.create_task(self._reply(job, gateway_id, future))
            replies.add(task)
            task.add_done_callback(replies.discard)
        for task in replies:
            task.cancel()

    async def _reply(self, job: dict[str, Any], gateway_id: int, pending: Any) -> None:
        try:
            await self._send_reply(job, gateway_id, await pending)
        except TRANSIENT as err:  # the requester times out and retries
            log.warning("collector %s: could not reply to job %s (%s)", self.owner, job.get("id"), err)

    async def _send_reply(self, job: dict[str, Any], gateway_id: int, result: dict[str, Any]) -> None:
        assert self.redis is not None
        await jobkeys.send_reply(self.redis, self.ns, job, gateway_id, result)
