"""The collector process: loads its shard's gateways and devices, runs one BusPoller per bus, stores results.

    collector = Collector.from_app(app, shard=Shard.parse("0/4"))
    asyncio.run(collector.run())            # until collector.request_stop()

Every ``reload_s`` the gateway/device/meter lists are read again (service role). Every ``renew_s`` the process
heartbeats in ``collector_members``, renews its bus leases and takes the ones it should have (``leases.py``:
PostgreSQL rows with a fencing epoch). Without ``--shard`` the gateways are spread over the live members by
rendezvous hashing, so collectors can come and go on any host; with ``--shard i/n`` the process wants the
gateways of its shard only. A bus is polled only while this process holds its lease, and a poller stops
sending before the lease could be granted to anybody else (``LocalLease``), so two collectors, or a command
worker holding the bus, never double-master a line. Jobs for a bus ("read now", commands) are taken from its
Redis list and run by its poller; their replies and readings carry the lease's fence (owner, epoch).

The process never ends on a transient fault: a reload that cannot reach the database or Redis is retried
with back-off while the pollers go on with what they have, a poller task that died is started again, and
readings stay buffered (bounded, see ``StorageSink``) until they are stored. Every 5 s each live bus
heartbeats (``liveness.publish``), which is how a dead or stuck collector is told from an offline gateway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from meterhub.collector import jobs as jobkeys
from meterhub.collector import leases, liveness
from meterhub.collector.bus import BusDevice, BusJob, BusPoller, BusSpec
from meterhub.collector.limit import InflightLimit
from meterhub.collector.policy import Backoff, Quarantine, RetryPolicy
from meterhub.collector.schedule import DEFAULT_STAGGER_S, Shard, interval_seconds, stagger
from meterhub.collector.store import StorageSink
from meterhub.driver import DeviceRef

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 0.5
TICK_S = leases.RENEW_S  # leases renewed, heartbeats published and dead poller tasks restarted this often
TRANSIENT = (OSError, aioredis.RedisError, SQLAlchemyError)


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
    """One collector process: the gateways it holds leases for, one poller task per bus."""

    def __init__(self, *, engine: Engine, redis_url: str, namespace: str, shard: Shard | None = None,
                 registry: dict[str, Any] | None = None, interval_s: float | None = None,
                 stagger_s: float = DEFAULT_STAGGER_S, reload_s: float = 60.0, policy: RetryPolicy | None = None,
                 quarantine_s: float = 30.0, flush_s: float = 1.0, only: set[int] | None = None,
                 lease_ttl_s: float = leases.LEASE_TTL_S, renew_s: float | None = None) -> None:
        if registry is None:
            from meterhub.plugins import driver_registry

            registry = driver_registry()
        renew_s = renew_s if renew_s is not None else min(TICK_S, lease_ttl_s / 3)
        if renew_s >= lease_ttl_s * (1 - leases.DRIFT) - leases.GUARD_S - 1.0:
            raise ValueError(f"renewing every {renew_s} s leaves no room in a {lease_ttl_s} s lease")
        self.engine, self.redis_url, self.ns = engine, redis_url, namespace
        self.shard, self.registry, self.interval_s = shard, registry, interval_s
        self.stagger_s, self.reload_s, self.policy, self.quarantine_s = stagger_s, reload_s, policy, quarantine_s
        self.lease_ttl_s, self.renew_s = lease_ttl_s, renew_s
        self.only = only
        self.owner = leases.member_id(str(shard) if shard else None)
        self.sink = StorageSink(engine, flush_s=flush_s)
        self.pollers: dict[int, BusPoller] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.leases: dict[int, leases.LocalLease] = {}  # the bus leases this process holds
        self.candidates: dict[int, tuple[BusSpec, list[BusDevice]]] = {}  # buses it may be given
        self.members: list[str] = []  # live dynamic members at the last tick
        self.limit = InflightLimit()  # transactions in flight across this process's buses
        self.stop_event = asyncio.Event()
        self.redis: aioredis.Redis | None = None
        self.loaded = asyncio.Event()
        self._redis_down = False
        self._db_down = False
        self._started_once = False
        self._sync = asyncio.Lock()  # one lease sync (or reload of the bus list) at a time
        self._beating: asyncio.Task[None] | None = None

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
        log.info("collector %s starting (%s)", self.owner,
                 f"shard {self.shard}" if self.shard else "gateways spread over the live collectors")
        retry = Backoff(first_s=1.0, max_s=30.0)
        ticker = asyncio.create_task(self._tick_loop())  # leases renewed on time, however long a reload takes
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
                try:
                    await asyncio.wait_for(self.stop_event.wait(), max(deadline - time.monotonic(), 0.0))
                except TimeoutError:
                    pass
        finally:
            self.stop_event.set()
            await asyncio.gather(ticker, *([self._beating] if self._beating else []), return_exceptions=True)
            await self._stop_pollers(list(self.pollers))
            try:
                await asyncio.to_thread(self._leave)
            except TRANSIENT as err:  # the member row and leases expire by themselves
                log.warning("collector %s: could not leave the membership (%s)", self.owner, err)
            intake.cancel()
            regulator.cancel()
            await asyncio.gather(intake, regulator, return_exceptions=True)
            await flusher
            await self.redis.aclose()
            log.info("collector %s stopped: %s", self.owner, self.sink.stats)

    async def _tick_loop(self) -> None:
        """Every ``renew_s`` until stopped: the tick (its own task, so a slow reload never delays renewals)."""
        while not self.stop_event.is_set():
            try:
                await self._tick()
            except Exception:  # a bug here must not end renewals: the leases would lapse everywhere
                log.exception("collector %s: lease tick failed", self.owner)
            try:
                await asyncio.wait_for(self.stop_event.wait(), self.renew_s)
            except TimeoutError:
                pass

    def _leave(self) -> None:
        with self.engine.begin() as conn:
            leases.leave(conn, self.owner)

    async def _tick(self) -> None:
        """Restart dead poller tasks, heartbeat and renew/take/give up leases (PostgreSQL), then the Redis
        heartbeat; a fault is logged once and tried again next tick."""
        self._restart_dead_pollers()
        await self.sync_leases()
        if self._beating is None or self._beating.done():  # Redis, however slow, never delays a renewal
            self._beating = asyncio.create_task(self._redis_heartbeat())

    async def _redis_heartbeat(self) -> None:
        try:
            await self._heartbeat()
        except TRANSIENT as err:
            if not self._redis_down:
                log.warning("collector %s: Redis unavailable (%s: %s); polling and storing go on, jobs and "
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
                              quarantine=Quarantine(base_s=self.quarantine_s), lease=self.leases.get(gateway_id))
            self.pollers[gateway_id] = fresh
            self.tasks[gateway_id] = asyncio.create_task(fresh.run(), name=f"bus-{gateway_id}")

    async def reload(self) -> None:
        """Read the candidate buses (the shard's, or all) from the database; update running pollers, stop the
        ones whose gateway is gone, then sync the leases (which starts pollers for the buses granted)."""

        def load() -> dict[int, tuple[BusSpec, list[BusDevice]]]:
            with Session(self.engine, info={"service": True}) as session:
                return load_buses(session, self.shard or Shard(), self.registry, self.interval_s, self.only)

        buses = await asyncio.to_thread(load)
        async with self._sync:
            self.candidates = buses
            gone = [gid for gid in self.pollers if gid not in buses]
            await self._stop_pollers(gone)
            for gateway_id, poller in self.pollers.items():
                poller.update(*buses[gateway_id])
        await self.sync_leases()

    def wanted(self) -> set[int]:
        """The candidate buses this process should hold: its shard's, or its rendezvous share."""
        if self.shard is not None:
            return set(self.candidates)
        owners = leases.assign(self.members or [self.owner], self.candidates)
        return {gid for gid, member in owners.items() if member == self.owner}

    async def sync_leases(self) -> None:
        """One transaction: heartbeat, renew held leases, take wanted free ones. Then stop pollers whose lease
        was lost, hand back leases now wanted elsewhere, start pollers for new ones."""
        async with self._sync:
            await self._sync_leases()

    async def _sync_leases(self) -> None:
        started = time.monotonic()  # before the transaction: the local deadline is not later than the row's
        held = {gid: lease.epoch for gid, lease in self.leases.items()}
        info = {"buses": len(self.pollers), "readings_stored": self.sink.stats.readings_stored}

        def work() -> tuple[list[str], dict[int, int], dict[int, int], set[int]]:
            with self.engine.begin() as conn:
                members = leases.heartbeat(conn, self.owner, shard=str(self.shard) if self.shard else None,
                                           ttl_s=self.lease_ttl_s, info=info)
                kept = leases.renew(conn, self.owner, held, self.lease_ttl_s)
                self.members = members
                wanted = self.wanted()
                got = leases.acquire(conn, self.owner, wanted - set(kept), self.lease_ttl_s)
                return members, kept, got, wanted

        try:
            members, kept, got, wanted = await asyncio.to_thread(work)
        except TRANSIENT as err:
            if not self._db_down:
                log.warning("collector %s: cannot renew bus leases (%s: %s); its pollers stop talking to their "
                            "buses when the leases run out", self.owner, type(err).__name__, str(err).splitlines()[0])
            self._db_down = True
            return
        if self._db_down:
            log.info("collector %s: leases renewed again", self.owner)
        self._db_down = False
        for gid, epoch in kept.items():
            self.leases[gid].renewed(started, epoch)
        lost = [gid for gid in held if gid not in kept]
        if lost:
            log.warning("collector %s lost the leases of gateways %s; stopping their pollers", self.owner, lost)
            for gid in lost:
                self.leases[gid].revoke()
            await self._stop_pollers(lost, release=False)
        moving = [gid for gid in kept if gid not in wanted]
        if moving:
            log.info("collector %s: gateways %s move to other collectors (%d live)", self.owner, moving,
                     len(members))
            await self._stop_pollers(moving)
        for position, gid in enumerate(sorted(got)):
            spec, devices = self.candidates[gid]
            window = self.stagger_s if not self._started_once else min(self.stagger_s, self.renew_s)
            lease = leases.LocalLease(gid, self.owner, got[gid], self.lease_ttl_s, started)
            self._start_poller(gid, spec, devices, stagger(position, len(got), spec.interval_s, window), lease)
        if got:
            log.info("collector %s: polling %d buses (+%d)", self.owner, len(self.pollers), len(got))
        self._started_once = True

    def _start_poller(self, gateway_id: int, spec: BusSpec, devices: list[BusDevice], first_delay_s: float,
                      lease: leases.LocalLease) -> None:
        self.leases[gateway_id] = lease
        poller = BusPoller(spec, devices, self.sink, policy=self.policy, limit=self.limit,
                           quarantine=Quarantine(base_s=self.quarantine_s), first_delay_s=first_delay_s,
                           lease=lease)
        self.pollers[gateway_id] = poller
        self.tasks[gateway_id] = asyncio.create_task(poller.run(), name=f"bus-{gateway_id}")

    async def _stop_pollers(self, gateway_ids: list[int], release: bool = True) -> None:
        """Stop these pollers (each finishes its transaction and closes its connection), then give their
        leases back so the next owner need not wait for them to expire."""
        for gid in gateway_ids:
            self.pollers[gid].stop()
        await asyncio.gather(*(self.tasks[gid] for gid in gateway_ids), return_exceptions=True)
        given = {}
        for gid in gateway_ids:
            del self.pollers[gid], self.tasks[gid]
            lease = self.leases.pop(gid, None)
            if lease is not None:
                lease.revoke()
                given[gid] = lease.epoch
        if release and given:
            await self.sink.flush()  # their readings are stored while the leases are still ours (else refused)

            def work() -> None:
                with self.engine.begin() as conn:
                    leases.release(conn, self.owner, given)

            try:
                await asyncio.to_thread(work)
            except TRANSIENT as err:  # the leases expire by themselves
                log.warning("collector %s: could not release the leases of %s (%s)", self.owner, sorted(given), err)

    async def _heartbeat(self) -> None:
        assert self.redis is not None
        now = time.monotonic()
        state = {"owner": self.owner, "shard": str(self.shard or "dynamic"), "buses": len(self.pollers),
                 "at": time.time(), "members": len(self.members),
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
            bus_job = BusJob(job["kind"], [int(m) for m in job.get("meter_ids", [])], job.get("method", ""),
                             job.get("params") or {})
            task = asyncio.create_task(self._reply(job, gateway_id, self._fenced(bus_job, poller.submit(bus_job))))
            replies.add(task)
            task.add_done_callback(replies.discard)
        for task in replies:
            task.cancel()

    @staticmethod
    async def _fenced(bus_job: BusJob, future: Any) -> dict[str, Any]:
        """The job's result with the fence (owner, epoch) of the lease it ran under: whoever stores the
        result checks that epoch in the same transaction (``leases.stale_gateways``)."""
        result = dict(await future)
        if bus_job.fence is not None:
            result["fence"] = bus_job.fence.as_dict()
        return result

    async def _reply(self, job: dict[str, Any], gateway_id: int, pending: Any) -> None:
        try:
            await self._send_reply(job, gateway_id, await pending)
        except TRANSIENT as err:  # the requester times out and retries
            log.warning("collector %s: could not reply to job %s (%s)", self.owner, job.get("id"), err)

    async def _send_reply(self, job: dict[str, Any], gateway_id: int, result: dict[str, Any]) -> None:
        assert self.redis is not None
        await jobkeys.send_reply(self.redis, self.ns, job, gateway_id, result)
