"""When a billing item falls due: pure date arithmetic, correct over month ends and leap years.

A day past the end of a month means that month's last day (day 31 → 28 or 29 February, 30 April); the
next month goes back to the configured day. Quarterly items fall in ``anchor_month`` and every third
month from it; yearly items in ``anchor_month``.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from datetime import date


def clamp_day(year: int, month: int, day: int) -> date:
    """``day`` of the month, or the month's last day when it has fewer days."""
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


def _months(recurrence: str, anchor_month: int) -> set[int]:
    if recurrence == "monthly":
        return set(range(1, 13))
    if recurrence == "quarterly":
        return {(anchor_month - 1 + 3 * k) % 12 + 1 for k in range(4)}
    if recurrence == "yearly":
        return {anchor_month}
    raise ValueError(f"unknown recurrence {recurrence!r}")


def due_dates(recurrence: str, day: int, anchor_month: int, start: date, until: date,
              end: date | None = None) -> Iterator[date]:
    """Every due date in ``[start, min(until, end)]`` (a one-off item is due on ``start``)."""
    last = min(until, end) if end else until
    if recurrence == "once":
        if start <= last:
            yield start
        return
    months = _months(recurrence, anchor_month)
    year, month = start.year, start.month
    while (year, month) <= (last.year, last.month):
        if month in months:
            due = clamp_day(year, month, day)
            if start <= due <= last:
                yield due
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
