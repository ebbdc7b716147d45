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
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import Any, NamedTuple

from sqlalchemy.engine import Engine

from .columns import COUNTERS, EXACT, INSTANT, QUALITY_GOOD, QUALITY_SUSPECT, QUANTITY_COLUMNS, STATES
from .window import BEFORE_INSTALLATION, EVENT, ReadingWindow, configured_window

log = logging.getLogger(__name__)

STAGING = "readings_staging"
COLUMNS: tuple[str, ...] = ("group_id", "meter_id", "ts", *QUANTITY_COLUMNS, "extra", "quality", "source")
_INDEX = {c: i for i, c in enumerate(COLUMNS)}
_EXTRA, _QUALITY, _SOURCE = _INDEX["extra"], _INDEX["quality"], _INDEX["source"]
# Largest absolute value per exact column (NUMERIC precision minus scale); overflow would fail the batch.
_LIMITS: dict[str, int] = {**{c: 10**14 for c in COUNTERS}, "water_m3": 10**12, "remaining_money": 10**11,
                           "purchase_count": 2**31}
_FLOATS = frozenset(INSTANT)
_BOOLS = frozenset(STATES)
_INTS = frozenset({"purchase_count"})
_EXACTS = frozenset(COUNTERS + EXACT) - _INTS
_COPY_CHUNK = 1 << 20  # characters per read of the COPY buffer (the default 8 KiB takes the GIL ~400x a batch)
RETRIABLE_PGCODES = {"40001", "40P01", "57P01", "57P02", "57P03", "08000", "08003", "08006"}


@dataclass(frozen=True, slots=True)
class Reading:
    """One channel's values at one time: ``values`` use the standard quantity keys; others go to ``extra``."""

    group_id: int
    meter_id: int
    ts: datetime
    values: Mapping[str, Any]
    quality: int = QUALITY_GOOD
    source: str = "poll"


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


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _format(key: str, value: Any) -> str | None:
    """COPY text of ``value`` for column ``key``; None when the value is not acceptable there."""
    if key in _BOOLS:
        return ("t" if value else "f") if isinstance(value, (bool, int)) else None
    kind = type(value)
    if kind is bool:
        return None
    if key in _FLOATS:
        if kind is float or kind is int or kind is Decimal:
            try:
                number = float(value)  # a signalling NaN or a huge int raises
            except (ValueError, OverflowError):
                return None
            return repr(number) if math.isfinite(number) else None
        return None
    if kind is Decimal:
        if not value.is_finite() or abs(value) >= _LIMITS[key]:
            return None
        if key in _INTS:
            return str(int(value)) if value == value.to_integral_value() else None
        return str(value)
    if kind is int:
        return str(value) if abs(value) < _LIMITS[key] else None
    if kind is float and key in _EXACTS and math.isfinite(value) and abs(value) < _LIMITS[key]:
        return repr(value)
    return None


_EXACT_FAST, _FLOAT, _BOOL, _GENERAL = range(4)
_FLOAT_EXPONENT = 300  # a Decimal for a double precision column goes as text when well inside its range


def _spec(key: str) -> tuple[int, int, int]:
    """(column index, kind, largest adjusted exponent) of a standard quantity key, for ``encode_lines``."""
    if key in _BOOLS:
        return _INDEX[key], _BOOL, 0
    if key in _FLOATS:
        return _INDEX[key], _FLOAT, _FLOAT_EXPONENT
    if key in _EXACTS and str(_LIMITS[key]).rstrip("0") == "1":  # the limit is a power of ten
        return _INDEX[key], _EXACT_FAST, len(str(_LIMITS[key])) - 1
    return _INDEX[key], _GENERAL, 0


#: How ``encode_lines`` formats each standard quantity (the same text as ``_format``, common cases inline).
_SPECS: dict[str, tuple[int, int, int]] = {key: _spec(key) for key in QUANTITY_COLUMNS}
NULL = "\\N"
_EMPTY_ROW = [NULL] * len(COLUMNS)
_QUALITY_TEXT = {q: str(q) for q in range(3)}


def encode_lines(readings: Iterable[Reading], newest: dict[tuple[int, int], list[Any]] | None = None,
                 bounds: tuple[datetime, datetime] | None = None,
                 refused: list[tuple[int, int, datetime, str]] | None = None) -> list[str]:
    """COPY text lines of ``readings`` (invalid values move to ``extra.invalid``), with per-batch caches.

    With ``newest``, also note per (group, meter) ``[newest ts, its line's index, newest good ts or None, oldest
    ts]``. With ``bounds`` (earliest, latest), a reading dated outside them is left out and, with ``refused``,
    noted there as (group, meter, ts, reason).
    """
    lines: list[str] = []
    append = lines.append
    specs, index_of, empty = _SPECS, _INDEX, _EMPTY_ROW
    quality_text = _QUALITY_TEXT
    source_text: dict[str, str] = {}
    ids: dict[int, str] = {}
    last_ts: Any = None
    ts_text = ""
    ts_ok = True
    for reading in readings:
        ts = reading.ts
        if ts is not last_ts:
            if ts.tzinfo is None:
                raise ValueError(f"Reading of meter {reading.meter_id} has a naive timestamp {ts}; give a time zone.")
            ts_text, last_ts = ts.isoformat(), ts
            ts_ok = bounds is None or bounds[0] <= ts <= bounds[1]
        if not ts_ok:
            if refused is not None:
                refused.append((reading.group_id, reading.meter_id, ts, ReadingWindow.reason(ts, bounds)))
            continue
        row = empty.copy()
        group_id, meter_id = reading.group_id, reading.meter_id
        row[0] = (ids.get(group_id) or ids.setdefault(group_id, str(int(group_id)))) if type(group_id) is int \
            else str(int(group_id))
        row[1] = (ids.get(meter_id) or ids.setdefault(meter_id, str(int(meter_id)))) if type(meter_id) is int \
            else str(int(meter_id))
        row[2] = ts_text
        extra: dict[str, Any] | None = None
        quality = reading.quality
        for key, value in reading.values.items():
            if value is None:
                continue
            spec = specs.get(key)
            if spec is not None:
                index, kind, exponent = spec
                text = None
                kind_of_value = type(value)
                if kind_of_value is Decimal:
                    # adjusted() < exponent  <=>  abs(value) < 10**exponent, for a finite Decimal
                    if kind <= _FLOAT and value.is_finite() and -exponent < value.adjusted() < exponent:
                        text = str(value)
                elif kind_of_value is float:
                    if kind == _FLOAT and value - value == 0.0:  # inf - inf and nan are nan
                        text = repr(value)
                elif kind == _BOOL and kind_of_value is bool:
                    text = "t" if value else "f"
                if text is None:
                    text = _format(key, value)
                if text is not None:
                    row[index] = text
                    continue
            extra = extra if extra is not None else {}
            if key not in index_of:
                extra[key] = value
            else:  # a standard quantity with an unusable value: keep it for inspection, never store it as a number
                extra.setdefault("invalid", {})[key] = str(value)
                quality = max(quality, QUALITY_SUSPECT)
        if extra:
            row[_EXTRA] = _escape(json.dumps(extra, default=str, ensure_ascii=False, separators=(",", ":")))
        row[_QUALITY] = quality_text.get(quality) if type(quality) is int and quality in quality_text \
            else str(int(quality))
        source = reading.source
        text = source_text.get(source)
        if text is None:
            text = source_text[source] = _escape(source[:8])
        row[_SOURCE] = text
        if newest is not None:
            good = ts if quality == QUALITY_GOOD else None
            seen = newest.get((group_id, meter_id))
            if seen is None:
                newest[(group_id, meter_id)] = [ts, len(lines), good, ts]
            else:
                if ts >= seen[0]:
                    seen[0], seen[1] = ts, len(lines)
                elif ts < seen[3]:
                    seen[3] = ts
                if good is not None and (seen[2] is None or good > seen[2]):
                    seen[2] = good
        append("\t".join(row))
    return lines


class EncodedBatch(NamedTuple):
    """A batch as COPY text: every reading, and the newest one per meter with the batch's newest good time."""

    text: str
    count: int
    latest: str
    meters: dict[int, set[int]]  # the meter ids of each group in the batch
    refused: tuple[tuple[int, int, datetime, str], ...] = ()  # (group, meter, ts, reason) dated outside the window
    oldest: datetime | None = None  # the oldest reading kept (meters installed after it are checked)


def encode_batch(readings: Iterable[Reading], window: ReadingWindow | None = None) -> EncodedBatch:
    """Encode ``readings`` for :func:`store_encoded`, leaving out those dated outside ``window`` (default: the
    configured one)."""
    newest: dict[tuple[int, int], list[Any]] = {}
    refused: list[tuple[int, int, datetime, str]] = []
    lines = encode_lines(readings, newest, (window or configured_window()).bounds(), refused)
    latest = [f"{lines[entry[1]]}\t{entry[2].isoformat() if entry[2] is not None else NULL}" for entry in newest.values()]
    meters: dict[int, set[int]] = {}
    for group_id, meter_id in newest:
        meters.setdefault(int(group_id), set()).add(int(meter_id))
    oldest = min((entry[3] for entry in newest.values()), default=None)
    return EncodedBatch("\n".join(lines) + "\n" if lines else "", len(lines),
                        "\n".join(latest) + "\n" if latest else "", meters, tuple(refused), oldest)


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
           notify: bool = True, workers: int = 2, fresh: bool = True) -> IngestResult:
    """Store ``readings`` in batches (each one transaction, retried on a lost connection); idempotent.

    Encoding the next batch (Python) overlaps with the database work on up to ``workers`` earlier batches
    (each on its own connection and thread). Batches are finished (merged, usage refreshed, ``reading_stored``
    sent) in order. Concurrent batches are safe: the insert is ``ON CONFLICT DO NOTHING``, ``meter_latest``
    only moves forward in time, and a deadlock between two batches is retried like a lost connection.
    With ``fresh``, the usage of the buckets a batch touched is brought up to date before ``reading_stored``
    (:mod:`freshness`), so that reports, charts and alarm sources see the readings at once.
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
                                            lambda cursor, batch=encoded: store_encoded(cursor, batch)),
                                encoded.oldest, max((r.ts for r in chunk), default=None) if fresh else None))
            while pending:
                finish(pending.popleft())
        finally:
            for future, _, _ in pending:  # an error: let the batches in flight finish, keep the first error
                future.exception()
    return total
