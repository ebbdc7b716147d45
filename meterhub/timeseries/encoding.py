"""Readings and their COPY encoding: one text line per reading, the newest per meter, and the readings dated
outside the accepted window left out (refused). Split from :mod:`ingest`, which stores what this encodes."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from .columns import COUNTERS, EXACT, INSTANT, QUALITY_GOOD, QUALITY_SUSPECT, QUANTITY_COLUMNS, STATES
from .window import ReadingWindow, configured_window

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


@dataclass(frozen=True, slots=True)
class Reading:
    """One channel's values at one time: ``values`` use the standard quantity keys; others go to ``extra``."""

    group_id: int
    meter_id: int
    ts: datetime
    values: Mapping[str, Any]
    quality: int = QUALITY_GOOD
    source: str = "poll"


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
