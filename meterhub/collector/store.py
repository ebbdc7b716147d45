"""The collector's writes: readings through the time-series ingest, health and fault counters set-based.

``StorageSink`` is the bus pollers' sink: it buffers outcomes in memory (never blocking a bus task) and a
flusher writes them every ``flush_s`` in a worker thread: readings with ``meterhub.timeseries.ingest.ingest``
(COPY, batched, idempotent), then one transaction that moves ``last_seen_at`` forward, marks answering
devices/gateways ``online`` (recording the transition in ``health_events`` like the health job does), adds
fault counts, and records ``cycle_overrun`` events. Going *offline* stays the job of
``meterhub.timeseries.health.detect_offline`` (window based), so the two never fight over a status.

Readings are fenced: each carries the bus lease's ``Fence`` it was read under, and every ingest transaction
first checks those epochs (``leases.stale_gateways``, ``FOR SHARE``); readings of a bus that another owner
was granted since are refused (dropped, counted in ``readings_refused``), the rest are stored.

The set-based updates are a thin adapter: ``timeseries.health.record_seen/record_fault`` update one row per
call, too slow for thousands of devices per second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from meterhub.collector import leases
from meterhub.collector.bus import BusSpec, CycleReport, DeviceOutcome
from meterhub.collector.policy import Backoff
from meterhub.timeseries.ingest import Reading, ingest

log = logging.getLogger(__name__)

HELD_ROWS_TIMEOUT = "15s"  # see StorageSink.write

_SEEN_SQL = """
WITH v AS (SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:ats AS timestamptz[])) AS v(id, at)),
seen AS (
  UPDATE {table} t SET last_seen_at = GREATEST(t.last_seen_at, v.at)
  FROM v WHERE t.id = v.id AND t.status = 'online'
), changed AS (
  UPDATE {table} t SET status = 'online', last_seen_at = GREATEST(t.last_seen_at, v.at)
  FROM v WHERE t.id = v.id AND t.status IS DISTINCT FROM 'online'
  RETURNING t.group_id, t.id, t.last_seen_at
)
INSERT INTO health_events (group_id, at, object_type, object_id, event, detail)
SELECT group_id, :now, '{kind}', id, 'online', jsonb_build_object('last_seen_at', last_seen_at, 'by', 'collector')
FROM changed
"""
# A device that answers has circuits that answer: meters never judged yet (``unknown``) follow their device at
# once, instead of waiting for the offline-window job (which then keeps them by their own readings).
_METERS_FOLLOW_SQL = """
UPDATE meters m SET status = 'online', last_seen_at = GREATEST(m.last_seen_at, v.at)
FROM unnest(CAST(:ids AS bigint[]), CAST(:ats AS timestamptz[])) AS v(id, at)
WHERE m.device_id = v.id AND m.active AND m.status = 'unknown'
"""
_FAULT_SQL = """
UPDATE {table} t SET fault_count = t.fault_count + v.n
FROM unnest(CAST(:ids AS bigint[]), CAST(:ns AS bigint[])) AS v(id, n) WHERE t.id = v.id
"""
_EVENT_SQL = """
INSERT INTO health_events (group_id, at, object_type, object_id, event, detail)
VALUES (:group_id, :at, 'gateway', :gateway_id, 'cycle_overrun', CAST(:detail AS jsonb))
"""


@dataclass
class Pending:
    """What the pollers produced since the last flush."""

    readings: list[Reading] = field(default_factory=list)
    fences: list[leases.Fence | None] = field(default_factory=list)  # per reading: the lease it was read under
    device_seen: dict[int, datetime] = field(default_factory=dict)
    gateway_seen: dict[int, datetime] = field(default_factory=dict)
    device_faults: Counter[int] = field(default_factory=Counter)
    gateway_faults: Counter[int] = field(default_factory=Counter)
    overruns: list[CycleReport] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.readings or self.device_seen or self.gateway_seen or self.device_faults
                    or self.gateway_faults or self.overruns)


@dataclass
class CollectorStats:
    """Counters of one collector process (logged, and published with its heartbeat)."""

    reads_ok: int = 0
    reads_failed: int = 0
    readings_stored: int = 0
    cycles: int = 0
    cycle_overruns: int = 0
    gateway_faults: int = 0
    flush_errors: int = 0
    readings_refused: int = 0  # read under a lease another owner was granted since (stale epoch)


class StorageSink:
    """Buffers poller results and writes them in batches from a thread."""

    def __init__(self, engine: Engine, *, flush_s: float = 1.0, batch_size: int = 20_000,
                 max_buffered: int = 500_000) -> None:
        self.engine, self.flush_s, self.batch_size, self.max_buffered = engine, flush_s, batch_size, max_buffered
        self.pending = Pending()
        self.stats = CollectorStats()
        self._full = asyncio.Event()
        self._retry = Backoff(first_s=flush_s, max_s=15.0)
        self._failing_since: float | None = None

    def accepting(self) -> bool:
        """False while ``max_buffered`` readings wait to be stored: the pollers postpone their cycles (a
        reading not taken yet is taken later from the meter's counters; one taken is never dropped)."""
        return len(self.pending.readings) < self.max_buffered

    # --- the Sink protocol (called from bus tasks; cheap, never blocks) ----------------------------
    def device_done(self, outcome: DeviceOutcome) -> None:
        device, p = outcome.device, self.pending
        if outcome.faults:
            p.device_faults[device.device_id] += outcome.faults
            p.gateway_faults[outcome.gateway_id] += outcome.faults
        if not outcome.ok:
            self.stats.reads_failed += 1
            return
        self.stats.reads_ok += 1
        p.device_seen[device.device_id] = outcome.at
        p.gateway_seen[outcome.gateway_id] = outcome.at
        source = "readnow" if outcome.source == "readnow" else "poll"
        for reading in outcome.readings:
            meter_id = device.meters.get(reading.channel)
            if meter_id is not None:
                p.readings.append(Reading(device.group_id, meter_id, reading.timestamp, reading.values,
                                          source=source))
                p.fences.append(outcome.fence)
        if len(p.readings) >= self.batch_size:
            self._full.set()

    def cycle_done(self, report: CycleReport) -> None:
        self.stats.cycles += 1
        if report.overrun:
            self.stats.cycle_overruns += 1
            self.pending.overruns.append(report)

    def gateway_fault(self, spec: BusSpec, error: str) -> None:
        self.stats.gateway_faults += 1
        self.pending.gateway_faults[spec.gateway_id] += 1

    # --- flushing ------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Flush every ``flush_s`` (sooner when a batch is full) until ``stop``; then a last flush."""
        while not stop.is_set():
            wait = self.flush_s if self._failing_since is None else self._retry.next()
            try:
                await asyncio.wait_for(stop.wait() if self._failing_since else self._full.wait(), wait)
            except TimeoutError:
                pass
            self._full.clear()
            await self.flush()
        await self.flush()
        if not self.pending.empty():
            log.error("collector: stopping with %d readings not stored (the database is unreachable)",
                      len(self.pending.readings))

    async def flush(self) -> None:
        """Write what is pending (in a thread); on failure keep it for the next flush."""
        batch, self.pending = self.pending, Pending()
        if batch.empty():
            return
        try:
            await asyncio.to_thread(self.write, batch)
        except Exception as err:
            self.stats.flush_errors += 1
            _merge_back(self.pending, batch)
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                (log.warning if isinstance(err, OperationalError) else log.exception)(
                    "collector: storing %d readings failed (%s: %s); they stay buffered and are retried with "
                    "back-off", len(self.pending.readings), type(err).__name__, str(err).splitlines()[0])
            return
        if self._failing_since is not None:
            log.info("collector: storing works again after %.0f s", time.monotonic() - self._failing_since)
            self._failing_since = None
            self._retry.reset()

    def write(self, batch: Pending) -> None:
        """Store one batch (blocking; runs in a thread)."""
        if batch.readings:
            self._store_readings(batch)
            batch.readings, batch.fences = [], []  # stored: a retry of the health part must not re-send them
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            # these rows are the ones the liveness check marks: a collector frozen (SIGSTOP, swapped out, a
            # debugger) inside this transaction must not keep them locked; PostgreSQL ends it after this long
            conn.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = '{HELD_ROWS_TIMEOUT}'"))
            for table, kind, seen in (("devices", "device", batch.device_seen),
                                      ("gateways", "gateway", batch.gateway_seen)):
                if seen:
                    conn.execute(text(_SEEN_SQL.format(table=table, kind=kind)),
                                 {"ids": list(seen), "ats": list(seen.values()), "now": now})
                    if table == "devices":
                        conn.execute(text(_METERS_FOLLOW_SQL), {"ids": list(seen), "ats": list(seen.values())})
            for table, faults in (("devices", batch.device_faults), ("gateways", batch.gateway_faults)):
                if faults:
                    conn.execute(text(_FAULT_SQL.format(table=table)), {"ids": list(faults), "ns": list(faults.values())})
            for report in batch.overruns:
                conn.execute(text(_EVENT_SQL), {"group_id": report.group_id, "at": now, "gateway_id": report.gateway_id,
                                                "detail": _json(report)})


    def _store_readings(self, batch: Pending) -> None:
        """Ingest with the lease check in each transaction; on a stale lease drop that bus's readings, retry."""
        readings = batch.readings
        fences = batch.fences + [None] * (len(readings) - len(batch.fences))  # readings given without a lease
        while readings:
            current = {f for f in fences if f is not None}

            def check(cursor: Any, current: set[leases.Fence] = current) -> None:
                stale = leases.stale_gateways(cursor, current, strict=False)
                if stale:
                    raise leases.StaleLease(stale)

            try:
                result = ingest(readings, engine=self.engine, batch_size=self.batch_size,
                                fence=check if current else None)
            except leases.StaleLease as err:
                kept = [(r, f) for r, f in zip(readings, fences) if f is None or f.gateway_id not in err.gateway_ids]
                self.stats.readings_refused += len(readings) - len(kept)
                log.warning("collector: %d readings of gateways %s refused: %s", len(readings) - len(kept),
                            sorted(err.gateway_ids), err)
                readings, fences = [r for r, _ in kept], [f for _, f in kept]
                continue
            self.stats.readings_stored += result.stored
            return


def _json(report: CycleReport) -> str:
    import json

    return json.dumps({"duration_s": round(report.duration_s, 3), "interval_s": report.interval_s,
                       "read": report.read, "failed": report.failed, "skipped": report.skipped,
                       "started_at": report.started_at.isoformat()})


def _merge_back(into: Pending, old: Pending) -> None:
    into.readings[:0] = old.readings
    into.fences[:0] = old.fences
    for key, value in old.device_seen.items():
        into.device_seen.setdefault(key, value)
    for key, value in old.gateway_seen.items():
        into.gateway_seen.setdefault(key, value)
    into.device_faults.update(old.device_faults)
    into.gateway_faults.update(old.gateway_faults)
    into.overruns[:0] = old.overruns


def describe(stats: CollectorStats) -> dict[str, Any]:
    return dict(stats.__dict__)
