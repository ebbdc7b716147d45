"""Batched, idempotent ingest of readings with ``COPY``.

    result = ingest([Reading(group_id, meter_id, ts, {"energy_kwh": Decimal("12.5")})])

Each batch runs in one transaction as the service role. A batch of new readings is copied straight into
``readings`` under a savepoint. If the unique key refuses a row (a re-sent reading), the meter check refuses
one (a meter not of its group) or a concurrent batch deadlocks with it, the savepoint is rolled back and the
batch takes the general path: COPY into a per-connection temporary table, then ``INSERT INTO readings …
ON CONFLICT DO NOTHING`` (a re-sent reading is not stored twice; unknown meters are skipped and counted in
``IngestResult.unmatched``). Then the newest reading of each meter (picked while encoding) is upserted into
``meter_latest``. A lost connection (server restart, terminated backend) or a deadlock retries the whole batch
on a fresh connection; because the insert is idempotent a retry never duplicates rows, even when the first
attempt had in fact committed. After commit the ``reading_stored`` plugin event fires per group.

Readings dated outside the believable window (:mod:`meterhub.timeseries.window`: too far in the future, before
``READING_EARLIEST``, or before their meter's ``installed_at``) are refused: never stored, never the meter's
latest, counted in ``IngestResult.refused`` and recorded as ``time_refused`` health events.
"""

from __future__ import annotations

import io
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import Any

from sqlalchemy.engine import Engine

from .columns import QUANTITY_COLUMNS
from .window import BEFORE_INSTALLATION, EVENT

from .encoding import COLUMNS, NULL, EncodedBatch, Reading, encode_batch, encode_lines  # noqa: F401

log = logging.getLogger(__name__)

STAGING = "readings_staging"
_COPY_CHUNK = 1 << 20  # characters per read of the COPY buffer (the default 8 KiB takes the GIL ~400x a batch)
RETRIABLE_PGCODES = {"40001", "40P01", "57P01", "57P02", "57P03", "08000", "08003", "08006"}




@dataclass
class IngestResult:
    """What one ``ingest`` call did."""

    received: int = 0
    stored: int = 0
    unmatched: int = 0
    refused: int = 0  # dated outside the believable window (future, too old, before the meter's installation)
    batches: int = 0
    retries: int = 0
    meter_ids_by_group: dict[int, set[int]] = field(default_factory=dict)

    @property
    def duplicates(self) -> int:
        """Readings already stored before (same meter and time)."""
        return self.received - self.stored - self.unmatched - self.refused

    def merge(self, other: IngestResult) -> None:
        """Add ``other``'s counts into this result."""
        self.received += other.received
        self.stored += other.stored
        self.unmatched += other.unmatched
        self.refused += other.refused
        self.batches += other.batches
        self.retries += other.retries
        for group_id, meters in other.meter_ids_by_group.items():
            self.meter_ids_by_group.setdefault(group_id, set()).update(meters)




_COLS = ", ".join(COLUMNS)
_CREATE_STAGING = (
    f"CREATE TEMP TABLE IF NOT EXISTS {STAGING} ON COMMIT DELETE ROWS AS "
    f"SELECT {_COLS} FROM readings WITH NO DATA"
)
# Rows go in key order, so two batches in flight that share readings take their locks in the same order
# (no deadlock between them); the primary key index is also filled in order.
_MERGE = f"""
WITH ins AS (
  INSERT INTO readings ({_COLS})
  SELECT {", ".join("s." + c for c in COLUMNS)} FROM {STAGING} s
  JOIN meters m ON m.id = s.meter_id AND m.group_id = s.group_id AND s.ts >= COALESCE(m.installed_at, '-infinity')
  ORDER BY s.meter_id, s.ts
  ON CONFLICT (meter_id, ts) DO NOTHING
  RETURNING group_id, meter_id
)
SELECT group_id, array_agg(DISTINCT meter_id), count(*) FROM ins GROUP BY group_id
"""
LATEST_STAGING = "readings_latest_staging"
_CREATE_LATEST_STAGING = (
    f"CREATE TEMP TABLE IF NOT EXISTS {LATEST_STAGING} ON COMMIT DELETE ROWS AS "
    f"SELECT {_COLS}, NULL::timestamptz AS good_ts FROM readings WITH NO DATA"
)
_LATEST_COLS = ("group_id", "meter_id", "ts", "good_ts", "quality", *QUANTITY_COLUMNS, "extra")
_INSTALLED = "COALESCE(m.installed_at, '-infinity')"
_LATEST_SELECT = {"good_ts": f"CASE WHEN s.good_ts >= {_INSTALLED} THEN s.good_ts END"}
# One row per meter (encode_batch picked each meter's newest reading), in meter order like the insert; a meter
# whose newest reading predates its installation has no reading of this batch stored (nothing moves).
_UPSERT_LATEST = f"""
INSERT INTO meter_latest ({", ".join(_LATEST_COLS)})
SELECT {", ".join(_LATEST_SELECT.get(c, "s." + c) for c in _LATEST_COLS)}
FROM {LATEST_STAGING} s JOIN meters m ON m.id = s.meter_id AND m.group_id = s.group_id AND s.ts >= {_INSTALLED}
ORDER BY s.meter_id
ON CONFLICT (meter_id) DO UPDATE SET
  ts = excluded.ts, quality = excluded.quality,
  good_ts = GREATEST(meter_latest.good_ts, excluded.good_ts),
  {", ".join(f"{c} = COALESCE(excluded.{c}, meter_latest.{c})" for c in QUANTITY_COLUMNS)},
  extra = COALESCE(meter_latest.extra, '{{}}'::jsonb) || COALESCE(excluded.extra, '{{}}'::jsonb)
WHERE excluded.ts >= meter_latest.ts
"""
_UNMATCHED = (
    f"SELECT count(*) FROM {STAGING} s WHERE NOT EXISTS "
    f"(SELECT 1 FROM meters m WHERE m.id = s.meter_id AND m.group_id = s.group_id)"
)
# Meters of the batch installed after its oldest reading (indexed; almost always none).
_INSTALLED_AFTER = "SELECT 1 FROM meters WHERE installed_at > %s AND id = ANY(%s) LIMIT 1"
_REFUSED_EVENTS = f"""
INSERT INTO health_events (group_id, object_type, object_id, event, detail)
SELECT m.group_id, 'meter', m.id, '{EVENT}',
       jsonb_build_object('reason', r.reason, 'count', r.n, 'first', r.first, 'last', r.last)
FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::int[], %s::timestamptz[], %s::timestamptz[])
     AS r(group_id, meter_id, reason, n, first, last)
JOIN meters m ON m.id = r.meter_id AND m.group_id = r.group_id
"""
_BEFORE_INSTALLATION_EVENTS = f"""
WITH ev AS (
  INSERT INTO health_events (group_id, object_type, object_id, event, detail)
  SELECT s.group_id, 'meter', s.meter_id, '{EVENT}',
         jsonb_build_object('reason', '{BEFORE_INSTALLATION}', 'count', count(*), 'first', min(s.ts),
                            'last', max(s.ts), 'installed_at', min(m.installed_at))
  FROM {STAGING} s JOIN meters m ON m.id = s.meter_id AND m.group_id = s.group_id
  WHERE s.ts < m.installed_at GROUP BY s.group_id, s.meter_id
  RETURNING (detail->>'count')::bigint AS n
)
SELECT COALESCE(sum(n), 0) FROM ev
"""


def _record_refused(cursor: Any, refused: Iterable[tuple[int, int, datetime, str]]) -> None:
    """One ``time_refused`` health event per meter and reason: how many, the first and last time."""
    summary: dict[tuple[int, int, str], list[Any]] = {}
    for group_id, meter_id, ts, reason in refused:
        entry = summary.get((group_id, meter_id, reason))
        if entry is None:
            summary[(group_id, meter_id, reason)] = [1, ts, ts]
        else:
            entry[0] += 1
            entry[1], entry[2] = min(entry[1], ts), max(entry[2], ts)
    keys = list(summary)
    cursor.execute(_REFUSED_EVENTS, ([int(k[0]) for k in keys], [int(k[1]) for k in keys], [k[2] for k in keys],
                                     [summary[k][0] for k in keys], [summary[k][1] for k in keys],
                                     [summary[k][2] for k in keys]))
    log.warning("%d readings refused: dated outside the believable window (%s)",
                sum(v[0] for v in summary.values()), ", ".join(sorted({k[2] for k in keys})))


def _installed_after(cursor: Any, batch: EncodedBatch) -> bool:
    """True when a meter of ``batch`` was installed after its oldest reading (those readings are refused)."""
    if batch.oldest is None:
        return False
    cursor.execute(_INSTALLED_AFTER, (batch.oldest, sorted({m for ids in batch.meters.values() for m in ids})))
    return cursor.fetchone() is not None


def store_batch(cursor: Any, readings: Iterable[Reading]) -> IngestResult:
    """Stage and merge ``readings`` in the caller's open transaction (``cursor``: psycopg2); no commit."""
    return store_encoded(cursor, encode_batch(readings))


def store_encoded(cursor: Any, batch: EncodedBatch) -> IngestResult:
    """Like :func:`store_batch` for readings already encoded by :func:`encode_batch`."""
    count = batch.count
    result = IngestResult(received=count + len(batch.refused), refused=len(batch.refused), batches=1)
    if batch.refused:
        _record_refused(cursor, batch.refused)
    if not count:
        return result
    staged = [LATEST_STAGING]
    early = _installed_after(cursor, batch)
    if not early and _append(cursor, batch):
        result.stored, result.meter_ids_by_group = count, {g: set(m) for g, m in batch.meters.items()}
    else:
        staged.append(STAGING)
        cursor.execute(_CREATE_STAGING)
        cursor.copy_expert(f"COPY {STAGING} ({_COLS}) FROM STDIN", io.StringIO(batch.text), size=_COPY_CHUNK)
        cursor.execute(_MERGE)
        for group_id, meter_ids, stored in cursor.fetchall():
            result.stored += stored
            result.meter_ids_by_group[group_id] = set(meter_ids)
        if early:
            cursor.execute(_BEFORE_INSTALLATION_EVENTS)
            before = int(cursor.fetchone()[0])
            result.refused += before
            if before:
                log.warning("%d readings refused: dated before their meter's installation", before)
    cursor.execute(_CREATE_LATEST_STAGING)
    cursor.copy_expert(f"COPY {LATEST_STAGING} ({_COLS}, good_ts) FROM STDIN", io.StringIO(batch.latest),
                       size=_COPY_CHUNK)
    cursor.execute(_UPSERT_LATEST)
    if result.stored < count:
        cursor.execute(_UNMATCHED)
        result.unmatched = cursor.fetchone()[0]
        if result.unmatched:
            log.warning("%d readings skipped: their meter does not exist in their group", result.unmatched)
    cursor.execute(f"TRUNCATE {', '.join(staged)}")
    return result


#: Why an append is refused: a reading already stored (unique key), a meter not of its group (the readings
#: meter check), a deadlock with a concurrent batch holding some of the same readings (rows go in text order).
_APPEND_REFUSED = frozenset({"23505", "23503", "40P01"})


def _append(cursor: Any, batch: EncodedBatch) -> bool:
    """COPY the batch straight into ``readings`` under a savepoint; False (rolled back) if any row is refused.

    Most batches hold only new readings of known meters, and for them this is one COPY instead of a COPY into
    staging plus an ``INSERT … ON CONFLICT`` that probes the key twice per row. The unique key and the meter
    check decide, not a guess: a refused batch takes the general path.
    """
    cursor.execute("SAVEPOINT ingest_append")
    try:
        cursor.copy_expert(f"COPY readings ({_COLS}) FROM STDIN", io.StringIO(batch.text), size=_COPY_CHUNK)
    except Exception as err:
        if getattr(err, "pgcode", None) not in _APPEND_REFUSED:
            raise
        cursor.execute("ROLLBACK TO SAVEPOINT ingest_append")
        return False
    cursor.execute("RELEASE SAVEPOINT ingest_append")
    return True


def is_retriable(err: BaseException) -> bool:
    """True for a lost connection, a terminated backend, a deadlock or a serialization failure."""
    import psycopg2

    if isinstance(err, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        return True
    return getattr(err, "pgcode", None) in RETRIABLE_PGCODES


def run_transaction(engine: Engine, work: Callable[[Any], IngestResult], *, attempts: int = 12,
                    max_pause: float = 5.0) -> IngestResult:
    """Run ``work(cursor)`` in one transaction and commit; retry it from scratch on a retriable error."""
    pause = 0.1
    for attempt in range(1, attempts + 1):
        raw = engine.raw_connection()
        try:
            with raw.cursor() as cursor:
                result = work(cursor)
            raw.commit()
            result.retries += attempt - 1
            raw.close()
            return result
        except Exception as err:
            retriable = is_retriable(err)
            try:
                if retriable:
                    raw.invalidate()
                else:
                    raw.rollback()
                    raw.close()
            except Exception:  # the connection is gone anyway
                log.debug("could not clean up the failed connection", exc_info=True)
            if not retriable or attempt == attempts:
                raise
            log.warning("ingest batch failed (%s: %s); retry %d/%d in %.1fs", type(err).__name__,
                        str(err).strip().splitlines()[0] if str(err).strip() else "", attempt, attempts - 1, pause)
            time.sleep(pause)
            pause = min(pause * 2, max_pause)
    raise AssertionError("unreachable")


def _fenced(cursor: Any, batch: EncodedBatch, fence: Callable[[Any], None] | None) -> IngestResult:
    if fence is not None:
        fence(cursor)
    return store_encoded(cursor, batch)


def notify_stored(meter_ids_by_group: Mapping[int, set[int]]) -> None:
    """Fire ``reading_stored(group_id, meter_ids)`` per group; plugin failures are logged, never raised."""
    if not meter_ids_by_group:
        return
    try:
        from meterhub.plugins import get_plugin_manager
    except ImportError:
        return
    try:
        hook = get_plugin_manager().hook
    except Exception:
        log.exception("plugin manager unavailable; reading_stored not sent")
        return
    for group_id, meter_ids in meter_ids_by_group.items():
        try:
            hook.reading_stored(group_id=group_id, meter_ids=sorted(meter_ids))
        except Exception:
            log.exception("a reading_stored hook failed for group %s", group_id)


def _chunks(items: Iterable[Reading], size: int) -> Iterator[list[Reading]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def ingest(readings: Iterable[Reading], *, engine: Engine | None = None, batch_size: int = 20_000,
           notify: bool = True, workers: int = 2, fresh: bool = True,
           fence: Callable[[Any], None] | None = None) -> IngestResult:
    """Store ``readings`` in batches (each one transaction, retried on a lost connection); idempotent.

    Encoding the next batch (Python) overlaps with the database work on up to ``workers`` earlier batches
    (each on its own connection and thread). Batches are finished (merged, usage refreshed, ``reading_stored``
    sent) in order. Concurrent batches are safe: the insert is ``ON CONFLICT DO NOTHING``, ``meter_latest``
    only moves forward in time, and a deadlock between two batches is retried like a lost connection.
    With ``fresh``, the usage of the buckets a batch touched is brought up to date before ``reading_stored``
    (:mod:`freshness`), so that reports, charts and alarm sources see the readings at once.
    ``fence(cursor)`` runs first in every batch's transaction and may raise to refuse the batch (the
    collector checks its bus leases' epochs there: ``meterhub.collector.leases``).
    """
    from .freshness import database_now, refresh_after_ingest

    if engine is None:
        from meterhub.db import service_engine

        engine = service_engine()
    total = IngestResult()
    since = database_now(engine) if fresh else None

    def finish(item: tuple[Future[IngestResult], datetime | None, datetime | None]) -> None:
        future, oldest, newest = item
        result = future.result()
        total.merge(result)
        if since is not None and result.stored:
            refresh_after_ingest(engine, since, {m for ms in result.meter_ids_by_group.values() for m in ms},
                                 oldest, newest)
        if notify:
            notify_stored(result.meter_ids_by_group)

    pending: deque[tuple[Future[IngestResult], datetime | None, datetime | None]] = deque()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ingest") as pool:
        try:
            for chunk in _chunks(readings, batch_size):
                encoded = encode_batch(chunk)
                while len(pending) >= max(1, workers):
                    finish(pending.popleft())
                pending.append((pool.submit(run_transaction, engine,
                                            lambda cursor, batch=encoded: _fenced(cursor, batch, fence)),
                                encoded.oldest, max((r.ts for r in chunk), default=None) if fresh else None))
            while pending:
                finish(pending.popleft())
        finally:
            for future, _, _ in pending:  # an error: let the batches in flight finish, keep the first error
                future.exception()
    return total
