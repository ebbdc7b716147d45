"""One asyncio task per bus: polls its devices in turn, one outstanding request at a time.

    poller = BusPoller(BusSpec(gateway_id=7, group_id=1, host="10.0.0.5", port=502, framing="rtu",
                               interval_s=1800, pause_s=0.03, timeout_s=0.5), devices, sink)
    task = asyncio.create_task(poller.run())
    reply = await poller.submit(BusJob("read", meter_ids=[42]))     # "read now", between two devices
    poller.stop(); await task

Everything that touches the bus goes through the poller's task — scheduled cycles, "read now" and commands —
so the bus never sees two masters. Between two devices the poller runs queued jobs first, so a "read now"
waits for at most one device read. A device that fails is quarantined (skipped 30 s, 60 s, … at most one
interval) so it cannot stall the others; when a device answers again every quarantined device of the bus is
tried again at once (a hung gateway made them all fail). A gateway that refuses the connection is retried
with exponential backoff. ``alive_at`` moves on whenever the task makes progress (the collector's per-bus
heartbeat); a sink that says it is not ``accepting()`` (its buffer is full) postpones the cycle.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from meterhub.collector.leases import LeaseExpired
from meterhub.collector.limit import InflightLimit
from meterhub.collector.policy import Backoff, Quarantine, RetryPolicy
from meterhub.collector.port import BusPort, GatewayUnreachable
from meterhub.collector.schedule import next_due
from meterhub.driver import COMMANDS, ChannelReading, DeviceRef
from meterhub.protocols.errors import DeviceError
from meterhub.transports import open_transport

log = logging.getLogger(__name__)
DECIMAL_PARAMS = frozenset({"amount", "alarm1", "alarm2", "overdraft", "limit_kw"})


@dataclass
class BusSpec:
    """One gateway connection and how to poll it."""

    gateway_id: int
    group_id: int
    host: str
    port: int
    framing: str  # transport framing: tcp | rtu | cjt188
    interval_s: float = 1800.0
    pause_s: float = 0.0
    timeout_s: float = 0.5
    name: str = ""


@dataclass
class BusDevice:
    """A device on the bus with its driver and its meters (channel -> meter id)."""

    device_id: int
    group_id: int
    driver: Any
    ref: DeviceRef
    meters: dict[int, int] = field(default_factory=dict)


@dataclass
class DeviceOutcome:
    """The result of reading one device once."""

    gateway_id: int
    device: BusDevice
    at: datetime
    readings: list[ChannelReading]
    error: str | None
    faults: int
    source: str = "poll"
    fence: Any = None  # the leases.Fence of the bus lease it was read under (None: no lease, e.g. benchmarks)
    # why it failed as a code of meterhub.commands.messages and its parameters (shown in the reader's language)
    error_code: str | None = None
    error_params: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class CycleReport:
    """One pass over every device of a bus."""

    gateway_id: int
    group_id: int
    started_at: datetime
    duration_s: float
    interval_s: float
    read: int
    failed: int
    skipped: int
    transactions: int

    @property
    def overrun(self) -> bool:
        """The cycle did not fit in its interval: the bus is overloaded or too many devices fail."""
        return self.duration_s > self.interval_s


@dataclass
class BusJob:
    """Work for the bus task: ``read`` (meter_ids) or ``command`` (meter_ids[0], method, params)."""

    kind: str
    meter_ids: list[int]
    method: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    future: asyncio.Future[dict[str, Any]] | None = None
    fence: Any = None  # the leases.Fence the job ran under (set when it is done)


class Sink(Protocol):
    """Where the poller reports; must not block (the service buffers and writes in a thread)."""

    def device_done(self, outcome: DeviceOutcome) -> None: ...

    def cycle_done(self, report: CycleReport) -> None: ...

    def gateway_fault(self, spec: BusSpec, error: str) -> None: ...


class NullSink:
    """Counts what it is given (benchmarks, tests)."""

    def __init__(self) -> None:
        self.outcomes = 0
        self.ok = 0
        self.reports: list[CycleReport] = []
        self.gateway_faults = 0

    def device_done(self, outcome: DeviceOutcome) -> None:
        self.outcomes += 1
        self.ok += outcome.ok

    def cycle_done(self, report: CycleReport) -> None:
        self.reports.append(report)

    def gateway_fault(self, spec: BusSpec, error: str) -> None:
        self.gateway_faults += 1


class BusPoller:
    """The single master of one bus."""

    def __init__(self, spec: BusSpec, devices: list[BusDevice], sink: Sink, *, policy: RetryPolicy | None = None,
                 quarantine: Quarantine | None = None, reconnect: Backoff | None = None, first_delay_s: float = 0.0,
                 transport: Any = None, clock: Callable[[], float] = time.monotonic,
                 limit: InflightLimit | None = None, lease: Any = None) -> None:
        self.spec, self.devices, self.sink, self.clock = spec, list(devices), sink, clock
        self.lease = lease  # a leases.LocalLease, or None (benchmarks, tests: no fencing)
        self.quarantine = quarantine or Quarantine()
        self.quarantine.max_s = min(self.quarantine.max_s, max(spec.interval_s, self.quarantine.base_s))
        self.reconnect = reconnect or Backoff()
        transport = transport or open_transport(spec.host, spec.port, spec.framing)
        self.port = BusPort(transport, policy, pause_s=spec.pause_s, timeout_s=spec.timeout_s, clock=clock,
                            limit=limit)
        self.port.lease = lease
        self.fenced = 0  # times the lease ran out under this poller (it stopped talking until renewed)
        self.jobs: asyncio.Queue[BusJob] = asyncio.Queue()
        self.first_delay_s = first_delay_s
        self.cycles = 0
        self.overruns = 0
        self.last_report: CycleReport | None = None
        self.down = False
        self.alive_at = clock()
        self._backlog_logged = False
        self._due = 0.0
        self._stopping = False
        self._wake = asyncio.Event()

    @property
    def name(self) -> str:
        return self.spec.name or f"gateway {self.spec.gateway_id} ({self.spec.host}:{self.spec.port})"

    def update(self, spec: BusSpec, devices: list[BusDevice]) -> None:
        """New settings and device list (from a reload); used from the next cycle on."""
        self.spec, self.devices = spec, list(devices)
        self.port.pause_s, self.port.transport.timeout = spec.pause_s, spec.timeout_s
        self.quarantine.max_s = min(900.0, max(spec.interval_s, self.quarantine.base_s))

    def submit(self, job: BusJob) -> asyncio.Future[dict[str, Any]]:
        """Queue ``job`` for the bus task; the future gets a result dict (never an exception)."""
        job.future = job.future or asyncio.get_running_loop().create_future()
        self.jobs.put_nowait(job)
        return job.future

    def stop(self) -> None:
        """Finish the current transaction, then end ``run()``."""
        self._stopping = True
        self._wake.set()

    # --- the loop ----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Poll until stopped: cycles when due, jobs whenever they come."""
        self._due = self.clock() + self.first_delay_s
        try:
            while not self._stopping:
                try:
                    job = await self._wait_for_work()
                    if self._stopping:
                        break
                    if job is not None:
                        await self._run_job(job)
                    else:
                        await self._cycle()
                except GatewayUnreachable as err:
                    await self._gateway_down(err)
                except LeaseExpired as err:
                    await self._fenced(err)
        finally:
            while not self.jobs.empty():
                _resolve(self.jobs.get_nowait(), {"ok": False, "error": "collector stopping",
                                                          "code": "collector.stopping"})
            if self.lease is not None:  # the bus is given up: no queued byte may reach it after the lease
                await self.port.abort()
            else:
                await self.port.close()

    async def _wait_for_work(self) -> BusJob | None:
        """The next job, or None when a cycle is due."""
        while not self._stopping:
            self.alive_at = self.clock()
            if self.lease is not None and not self.lease.may_send(0.0):
                raise LeaseExpired(f"bus lease of gateway {self.spec.gateway_id} ran out")
            if not self.jobs.empty():
                return self.jobs.get_nowait()
            delay = self._due - self.clock()
            if delay <= 0:
                return None
            if self.lease is not None:  # wake up when the lease runs out, to drop the connection then
                delay = min(delay, max(self.lease.deadline - self.clock(), 0.0) + 0.001)
            job = await self._wait(min(delay, 5.0))
            if job is not None:
                return job
        return None

    async def _wait(self, delay: float) -> BusJob | None:
        getter = asyncio.ensure_future(self.jobs.get())
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((getter, waker), timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waker.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        return None

    async def _cycle(self) -> None:
        if not getattr(self.sink, "accepting", lambda: True)():
            if not self._backlog_logged:
                log.warning("%s: the collector's buffer of unstored readings is full (database down?); "
                            "cycles are postponed until it drains", self.name)
            self._backlog_logged = True
            self._due = next_due(self._due, self.spec.interval_s, self.clock())
            return
        if self._backlog_logged:
            log.info("%s: readings are stored again; polling resumes", self.name)
            self._backlog_logged = False
        start, started_at = self.clock(), datetime.now(UTC)
        transactions = self.port.stats.transactions
        read = failed = skipped = 0
        now, probed = self.clock(), None
        if self.devices and all(self.quarantine.active(d.device_id, now) for d in self.devices):
            # every device failed (a hung or dead gateway): probe one per cycle, so a bus that came back is
            # read again within an interval instead of after the longest quarantine
            probed = min(self.devices, key=lambda d: self.quarantine.entries[d.device_id].until)
            outcome = await self._read(probed)
            read += outcome.ok
            failed += not outcome.ok
        for device in list(self.devices):
            if device is probed:
                continue
            while not self.jobs.empty():  # "read now" and commands go first, between two devices
                await self._run_job(self.jobs.get_nowait())
            if self._stopping:
                return
            if self.quarantine.active(device.device_id, self.clock()):
                skipped += 1
                continue
            outcome = await self._read(device)
            read += outcome.ok
            failed += not outcome.ok
        duration = self.clock() - start
        self._due = next_due(self._due, self.spec.interval_s, self.clock())
        self.cycles += 1
        report = CycleReport(self.spec.gateway_id, self.spec.group_id, started_at, duration, self.spec.interval_s,
                             read, failed, skipped, self.port.stats.transactions - transactions)
        self.last_report = report
        if report.overrun:
            self.overruns += 1
            log.warning("%s: cycle took %.1f s, longer than its %.0f s interval (%d devices, %d failed, "
                        "%d skipped); lengthen the interval or split the bus", self.name, duration,
                        self.spec.interval_s, len(self.devices), failed, skipped)
        self.sink.cycle_done(report)

    async def _read(self, device: BusDevice, source: str = "poll") -> DeviceOutcome:
        self.port.begin_device()
        at = datetime.now(UTC)
        readings: list[ChannelReading] = []
        error: str | None = None
        code: str | None = None
        params: dict[str, Any] = {}
        try:
            readings = await device.driver.read(self.port, device.ref)
        except (GatewayUnreachable, LeaseExpired):
            raise
        except DeviceError as err:
            error, code, params = str(err), err.error_code, dict(err.params or {})
        except Exception as err:  # a driver bug must not kill the bus task
            log.exception("%s: driver %s failed on device %s", self.name, device.driver.key, device.ref.address)
            error = f"driver error: {type(err).__name__}: {err}"
            code, params = "command.unexpected", {"detail": f"{type(err).__name__}: {err}"[:200]}
        self.alive_at = self.clock()
        if error is None:
            if self.quarantine.succeeded(device.device_id):
                log.info("%s: device %s answers again", self.name, device.ref.address)
                self.quarantine.release_all()  # the bus recovered: the others are tried again now
        else:
            first = self.quarantine.failures(device.device_id) == 0
            span = self.quarantine.failed(device.device_id, self.clock())
            (log.warning if first else log.debug)(
                "%s: device %s failed (%s); skipped for %.0f s", self.name, device.ref.address, error, span)
        outcome = DeviceOutcome(self.spec.gateway_id, device, at, readings, error, self.port.device_faults, source,
                                self.lease.fence if self.lease is not None else None, code, params)
        self.sink.device_done(outcome)
        return outcome

    # --- jobs ----------------------------------------------------------------------------------------
    def _device_of(self, meter_id: int) -> tuple[BusDevice, int] | None:
        for device in self.devices:
            for channel, mid in device.meters.items():
                if mid == meter_id:
                    return device, channel
        return None

    async def _run_job(self, job: BusJob) -> None:
        if job.future is not None and job.future.done():
            return  # the requester gave up
        try:
            result = await (self._read_now(job) if job.kind == "read" else self._command(job))
        except GatewayUnreachable as err:
            _resolve(job, {"ok": False, "error": f"gateway unreachable: {err}", "code": "gateway.unreachable"})
            raise
        except LeaseExpired as err:
            _resolve(job, {"ok": False, "error": f"not sent: {err}", "retryable": True, "code": "collector.not_sent"})
            raise
        if self.lease is not None:
            job.fence = self.lease.fence
        _resolve(job, result)

    async def _read_now(self, job: BusJob) -> dict[str, Any]:
        wanted = set(job.meter_ids)
        meters: dict[str, Any] = {}
        for device in self.devices:
            mine = {ch: mid for ch, mid in device.meters.items() if mid in wanted}
            if not mine:
                continue
            outcome = await self._read(device, source="readnow")
            by_channel = {r.channel: r for r in outcome.readings}
            for channel, meter_id in mine.items():
                reading = by_channel.get(channel)
                meters[str(meter_id)] = (
                    {"ok": True, "ts": reading.timestamp.isoformat(), "values": _jsonable(reading.values)}
                    if reading else _read_failure(outcome, channel))
        for meter_id in wanted - {int(m) for m in meters}:
            meters[str(meter_id)] = {"ok": False, "error": f"meter is not on {self.name}", "code": "collector.wrong_bus"}
        return {"ok": all(m["ok"] for m in meters.values()), "meters": meters}

    async def _command(self, job: BusJob) -> dict[str, Any]:
        found = self._device_of(job.meter_ids[0]) if job.meter_ids else None
        if found is None:
            return {"ok": False, "error": f"meter is not on {self.name}", "retryable": False,
                    "code": "collector.wrong_bus"}
        device, channel = found
        if job.method not in COMMANDS:
            return {"ok": False, "error": f"unknown command {job.method!r}", "retryable": False,
                    "code": "collector.unknown_method", "params": {"method": job.method}}
        params = {k: _decimal(k, v) for k, v in job.params.items()}
        self.port.begin_device()
        try:
            await getattr(device.driver, job.method)(self.port, device.ref, channel=channel, **params)
        except (GatewayUnreachable, LeaseExpired):
            raise
        except DeviceError as err:
            return {"ok": False, "error": str(err), "retryable": bool(err.retryable), "code": err.error_code,
                    "params": err.params}
        return {"ok": True}

    # --- lease ran out ---------------------------------------------------------------------------
    async def _fenced(self, err: LeaseExpired) -> None:
        """The lease was not renewed in time: close the connection and send nothing until it is renewed (or
        the collector stops this poller because another owner got the bus). Jobs meanwhile fail at once."""
        self.fenced += 1
        log.warning("%s: %s; the bus is left alone until the lease is renewed", self.name, err)
        await self.port.abort()
        while not self._stopping:
            self.alive_at = self.clock()
            if self.lease is None or self.lease.may_send(2 * self.spec.timeout_s):
                log.info("%s: lease renewed; polling resumes", self.name)
                self._due = min(self._due, self.clock())
                return
            job = await self._wait(0.2)
            if job is not None:
                _resolve(job, {"ok": False, "error": f"{self.name}: bus lease not renewed; not sent",
                               "retryable": True, "code": "collector.lease_lost"})

    # --- gateway down ----------------------------------------------------------------------------
    async def _gateway_down(self, err: GatewayUnreachable) -> None:
        """Back off and reconnect; jobs that arrive meanwhile fail at once instead of waiting."""
        if not self.down:
            log.warning("%s: gateway unreachable (%s); reconnecting with backoff", self.name, err)
        self.down = True
        self.sink.gateway_fault(self.spec, str(err))
        while not self._stopping:
            self.alive_at = self.clock()
            deadline = self.clock() + self.reconnect.next()
            while not self._stopping and (left := deadline - self.clock()) > 0:
                self.alive_at = self.clock()
                job = await self._wait(min(left, 5.0))
                if job is not None:
                    _resolve(job, {"ok": False, "error": f"{self.name} is unreachable; retrying the connection",
                                   "code": "gateway.unreachable"})
            if self._stopping:
                return
            try:
                await self.port.connect()
            except GatewayUnreachable as again:
                self.sink.gateway_fault(self.spec, str(again))
                continue
            log.info("%s: gateway reachable again", self.name)
            self.down = False
            self.reconnect.reset()
            self._due = min(self._due, self.clock())  # the interrupted cycle runs again now
            return


def _resolve(job: BusJob, result: dict[str, Any]) -> None:
    if job.future is not None and not job.future.done():
        job.future.set_result(result)


def _read_failure(outcome: DeviceOutcome, channel: int) -> dict[str, Any]:
    """A read-now reply for a meter the read did not give: the device's error with its code and parameters, or the
    missing channel."""
    if outcome.error is None:
        return {"ok": False, "error": f"no channel {channel} in the reply", "code": "device.no_channel",
                "params": {"channel": channel}}
    return {"ok": False, "error": outcome.error, "code": outcome.error_code or "collector.read_failed",
            "params": outcome.error_params}


def _decimal(key: str, value: Any) -> Any:
    if key in DECIMAL_PARAMS:
        return Decimal(str(value))
    if key == "prices":
        return [Decimal(str(v)) for v in value]
    return value


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, bool) else str(v)) for k, v in values.items()}
