"""Streaming xlsx: openpyxl write-only workbooks fed from row iterators, in bounded memory."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from ..spreadsheets import append_row, new_workbook

log = logging.getLogger(__name__)
FORMATS = {"money": "#,##0.00", "date": "yyyy-mm-dd hh:mm:ss"}
MAX_ROWS = 1_048_575  # Excel's sheet limit minus the header


def _cell_value(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.replace(tzinfo=None)  # callers convert to local time first; Excel has no zones
    if isinstance(value, (dict, list)):
        return str(value)
    return value


def write_xlsx(target: str | Path | IO[bytes], title: str, header: Sequence[str], rows: Iterable[Sequence[Any]],
               kinds: Sequence[str] | None = None, progress: Callable[[int], None] | None = None,
               every: int = 5000) -> int:
    """Write ``rows`` under ``header`` to one sheet; returns the number of data rows written."""
    workbook = new_workbook()
    safe = "".join(" " if ch in '\\/*?:[]' else ch for ch in title).strip()[:31]
    sheet = workbook.create_sheet(title=safe or "report")
    append_row(sheet, [str(label) for label in header], bold=True)
    formats = [FORMATS.get(k) for k in (kinds or [])]
    count = 0
    for row in rows:
        if count >= MAX_ROWS:
            log.warning("xlsx %s truncated at %d rows (Excel's limit)", title, MAX_ROWS)
            break
        append_row(sheet, [_cell_value(v) for v in row], formats)
        count += 1
        if progress is not None and count % every == 0:
            progress(count)
    workbook.save(target)
    return count
