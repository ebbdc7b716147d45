"""Batched ingest of readings: ``COPY`` into a staging table, then one idempotent ``INSERT … SELECT``.

    result = ingest([Reading(group_id, meter_id, ts, {"energy_kwh": Decimal("12.5")})])

Each batch runs in one transaction as the service role: COPY into a per-connection temporary table,
``INSERT INTO readings … ON CONFLICT DO NOTHING`` (a re-sent reading is not stored twice), and an upsert of
``meter_latest``. A lost connection (server restart, terminated backend) or a deadlock retries the whole
batch on a fresh connection; because the insert is idempotent a retry never duplicates rows, even when the
first attempt had in fact committed. After commit the ``reading_stored`` plugin event fires per group.
Readings whose meter does not exist in their group are skipped (counted in ``IngestResult.unmatched``).
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
from typing import Any

from sqlalchemy.engine import Engine

from .columns import COUNTERS, EXACT, INSTANT, QUALITY_GOOD, QUALITY_SUSPECT, QUANTITY_COLUMNS, STATES

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
    batches: int = 0
    retries: int = 0
    meter_ids_by_group: dict[int, set[int]] = field(default_factory=dict)

    @property
    def duplicates(self) -> int:
        """Readings already stored before (same meter and time)."""
        return self.received - self.stored - self.unmatched

    def merge(self, other: IngestResult) -> None:
        """Add ``other``'s counts into this result."""
        self.received += other.received
        self.stored += other.stored
        self.unmatched += other.unmatched
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
            number = float(value)
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


def _fast_exact(key: str) -> Callable[[Any], str | None]:
    """Formatter of an exact column whose limit is a power of ten: plain finite Decimals skip the general path."""
    exponent = len(str(_LIMITS[key])) - 1

    def fmt(value: Any) -> str | None:
        # adjusted() < exponent  <=>  abs(value) < 10**exponent for a non-zero finite Decimal; others: general path.
        if type(value) is Decimal and value.is_finite() and value.adjusted() < exponent:
            return str(value)
        return _format(key, value)
    return fmt


def _fast_float(key: str) -> Callable[[Any], str | None]:
    def fmt(value: Any) -> str | None:
        if type(value) is float:
            return repr(value) if value - value == 0.0 else None  # inf - inf and nan are nan
        return _format(key, value)
    return fmt


def _fast_bool(key: str) -> Callable[[Any], str | None]:
    def fmt(value: Any) -> str | None:
        if value is True:
            return "t"
        if value is False:
            return "f"
        return _format(key, value)
    return fmt


#: Column index and formatter per standard quantity key (same results as ``_format``, common cases first).
_FORMATTERS: dict[str, tuple[int, Callable[[Any], str | None]]] = {
    key: (_INDEX[key], (_fast_bool if key in _BOOLS else _fast_float if key in _FLOATS else
                        _fast_exact if key in _EXACTS and str(_LIMITS[key]).rstrip("0") == "1" else
                        (lambda k: lambda v: _format(k, v)))(key))
    for key in QUANTITY_COLUMNS
}
_EMPTY_ROW = ["\\N"] * len(COLUMNS)
_QUALITY_TEXT = {q: str(q) for q in range(3)}


def encode_lines(readings: Iterable[Reading]) -> list[str]:
    """COPY text lines of ``readings`` (invalid values move to ``extra.invalid``), with per-batch caches."""
    lines: list[str] = []
    append = lines.append
    formatters, index_of, empty = _FORMATTERS, _INDEX, _EMPTY_ROW
    quality_text = _QUALITY_TEXT
    source_text: dict[str, str] = {}
    ids: dict[int, str] = {}
    last_ts: Any = None
    ts_text = ""
    for reading in readings:
        ts = reading.ts
        if ts is not last_ts:
            if ts.tzinfo is None:
                raise ValueError(f"Reading of meter {reading.meter_id} has a naive timestamp {ts}; give a time zone.")
            ts_text, last_ts = ts.isoformat(), ts
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
            spec = formatters.get(key)
            if spec is not None:
                text = spec[1](value)
                if text is not None:
                    row[spec[0]] = text
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
        append("\t".join(row))
    return lines


def encode_text(readings: Iterable[Reading]) -> tuple[str, int]:
    """The COPY text of ``readings`` and how many rows it holds."""
    lines = encode_lines(readings)
    return ("\n".join(lines) + "\n" if lines else ""), len(lines)


def encode_rows(readings: Iterable[Reading]) -> tuple[io.StringIO, int]:
    """A COPY text buffer of ``readings`` and how many rows it holds."""
    text, count = encode_text(readings)
    return io.StringIO(text), count


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
  JOIN meters m ON m.id = s.meter_id AND m.group_id = s.group_id
  ORDER BY s.meter_id, s.ts
  ON CONFLICT (meter_id, ts) DO NOTHING
  RETURNING group_id, meter_id
)
SELECT group_id, array_agg(DISTINCT meter_id), count(*) FROM ins GROUP BY group_id
"""
_LATEST_COLS = ("group_id", "meter_id", "ts", "good_ts", "quality", *QUANTITY_COLUMNS, "extra")
# Only the newest row per meter of the batch; the window is ordered like DISTINCT ON, so one sort serves both.
_UPSERT_LATEST = f"""
INSERT INTO meter_latest ({", ".join(_LATEST_COLS)})
SELECT DISTINCT ON (s.meter_id) s.group_id, s.meter_id, s.ts,
  max(s.ts) FILTER (WHERE s.quality = {QUALITY_GOOD}) OVER (
    PARTITION BY s.meter_id ORDER BY s.ts DESC ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING),
  s.quality, {", ".join("s." + c for c in QUANTITY_COLUMNS)}, s.extra
FROM {STAGING} s JOIN meters m ON m.id = s.meter_id AND m.group_id = s.group_id
ORDER BY s.meter_id, s.ts DESC
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


def store_batch(cursor: Any, readings: Iterable[Reading]) -> IngestResult:
    """Stage and merge ``readings`` in the caller's open transaction (``cursor``: psycopg2); no commit."""
    return store_encoded(cursor, *encode_text(readings))


def store_encoded(cursor: Any, copy_text: str, count: int) -> IngestResult:
    """Like :func:`store_batch` for rows already encoded as COPY text (``count`` lines)."""
    result = IngestResult(received=count, batches=1)
    if not count:
        return result
    cursor.execute(_CREATE_STAGING)
    cursor.copy_expert(f"COPY {STAGING} ({_COLS}) FROM STDIN", io.StringIO(copy_text), size=_COPY_CHUNK)
    cursor.execute(_MERGE)
    for group_id, meter_ids, stored in cursor.fetchall():
        result.stored += stored
        result.meter_ids_by_group[group_id] = set(meter_ids)
    cursor.execute(_UPSERT_LATEST)
    if result.stored < count:
        cursor.execute(_UNMATCHED)
        result.unmatched = cursor.fetchone()[0]
        if result.unmatched:
            log.warning("%d readings skipped: their meter does not exist in their group", result.unmatched)
    cursor.execute(f"TRUNCATE {STAGING}")
    return result


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
           notify: bool = True, workers: int = 2) -> IngestResult:
    """Store ``readings`` in batches (each one transaction, retried on a lost connection); idempotent.

    Encoding the next batch (Python) overlaps with the database work on up to ``workers`` earlier batches
    (each on its own connection and thread). Batches are finished (merged, ``reading_stored`` sent) in order.
    Concurrent batches are safe: the insert is ``ON CONFLICT DO NOTHING``, ``meter_latest`` only moves forward
    in time, and a deadlock between two batches is retried like a lost connection.
    """
    if engine is None:
        from meterhub.db import service_engine

        engine = service_engine()
    total = IngestResult()

    def finish(future: Future[IngestResult]) -> None:
        result = future.result()
        total.merge(result)
        if notify:
            notify_stored(result.meter_ids_by_group)

    pending: deque[Future[IngestResult]] = deque()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ingest") as pool:
        try:
            for chunk in _chunks(readings, batch_size):
                copy_text, count = encode_text(chunk)
                while len(pending) >= max(1, workers):
                    finish(pending.popleft())
                pending.append(pool.submit(run_transaction, engine,
                                           lambda cursor, t=copy_text, n=count: store_encoded(cursor, t, n)))
            while pending:
                finish(pending.popleft())
        finally:
            for future in pending:  # an error: let the batches in flight finish, keep the first error
                future.exception()
    return total
