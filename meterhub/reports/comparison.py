"""Usage and cost with comparisons (issue 21 item 9): per day, month or year and per meter, room, building or
property, the usage, what the ledger charged for that period, the previous period and the same period a year
before, with their changes in %.

The cost of a period is the sum of the consumption charges the ledger booked for its meters with an interval
ending in that period (``prepaid_charges``, each one a ledger transfer); where nothing was charged the cell says
"not charged" rather than a 0 nobody booked. Usage comes from :func:`usage.usage_rows` over the report's periods
and the year before them, so both backends and every level give the same numbers as the usage report.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import text
from sqlalchemy.orm import Session

from .filters import ReportFilter, selected_meters
from .registry import Column, ReportDefinition
from .usage import USAGE_COLUMNS, _group_key, _pct, _shift_month, period_label

ZERO = Decimal(0)
_FORMAT = {"day": "YYYY-MM-DD", "month": "YYYY-MM", "year": "YYYY"}
_TRUNC = {"day": "day", "month": "month", "year": "year"}


def previous_period(label: str, granularity: str) -> str:
    """The period before ``label`` (a day, month or year label)."""
    if granularity == "year":
        return f"{int(label) - 1:04d}"
    if granularity == "month":
        return period_label(_shift_month(date.fromisoformat(label + "-01"), -1), "month")
    return (date.fromisoformat(label) - timedelta(days=1)).isoformat()


def year_before(label: str, granularity: str) -> str:
    """The same period a year before ``label`` (29 February: the 28th)."""
    if granularity == "year":
        return f"{int(label) - 1:04d}"
    if granularity == "month":
        return f"{int(label[:4]) - 1:04d}{label[4:]}"
    day = date.fromisoformat(label)
    try:
        return day.replace(year=day.year - 1).isoformat()
    except ValueError:
        return date(day.year - 1, 2, 28).isoformat()


def _window_start(f: ReportFilter) -> date:
    """A year and one period before the report's start: the comparisons' usage."""
    if f.granularity == "year":
        return date(f.start.year - 2, 1, 1)
    if f.granularity == "month":
        return _shift_month(f.start.replace(day=1), -13)
    return date.fromisoformat(year_before(f.start.isoformat(), "day")) - timedelta(days=1)


def period_costs(session: Session, f: ReportFilter) -> dict[tuple, dict[str, Decimal]]:
    """What the ledger charged, per level key and period label, from the report's start to its end."""
    meters = {m.id: m for m in selected_meters(session, f)}
    if not meters:
        return {}
    unit = _TRUNC[f.granularity]
    rows = session.execute(text(
        f"SELECT c.meter_id, to_char(date_trunc('{unit}', (c.interval_end - interval '1 microsecond') "
        f"AT TIME ZONE :tz), '{_FORMAT[f.granularity]}') AS period, sum(c.amount) "
        "FROM prepaid_charges c WHERE c.group_id = :g AND c.meter_id = ANY(:ids) "
        "AND c.interval_end > :start AND c.interval_end <= :end GROUP BY 1, 2"),
        {"g": f.group_id, "ids": list(meters), "tz": f.timezone, "start": f.start_at(), "end": f.end_at()})
    out: dict[tuple, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for meter_id, period, amount in rows:
        out[tuple(_group_key(meters[meter_id], f.level)[1:6])][period] += amount or ZERO
    return out


def comparison_rows(session: Session, f: ReportFilter) -> Iterator[tuple]:
    """(period, property, building, room, meter, utility, usage, cost, previous, change %, a year before,
    change %) per level object and period of the report."""
    from .usage import usage_rows

    window = ReportFilter(**{**f.__dict__, "start": _window_start(f)})
    usage: dict[tuple, dict[str, Decimal]] = defaultdict(dict)
    for row in usage_rows(session, window):
        usage[tuple(row[1:6])][row[0]] = row[6]
    first = period_label(f.start, f.granularity)
    costs = period_costs(session, f)
    not_charged = _("not charged")
    for key, periods in usage.items():
        for label in sorted(p for p in periods if p >= first):
            total = periods[label]
            before = periods.get(previous_period(label, f.granularity), ZERO)
            year_ago = periods.get(year_before(label, f.granularity), ZERO)
            cost = costs.get(key, {}).get(label)
            yield (label, *key, total, not_charged if cost is None else cost, before, _pct(total - before, before),
                   year_ago, _pct(total - year_ago, year_ago))


COMPARISON_COLUMNS = (
    *USAGE_COLUMNS[:7],
    Column("cost", _l("Cost charged (CNY)"), "money"),
    Column("previous", _l("Previous period"), "number"), Column("pop", _l("Period on period %"), "percent"),
    Column("last_year", _l("Same period last year"), "number"), Column("yoy", _l("Year on year %"), "percent"),
)

REPORTS = [
    ReportDefinition("comparison", _l("Usage, cost and comparisons"), "report.view", COMPARISON_COLUMNS,
                     comparison_rows,
                     _l("Per day, month or year: usage, what the ledger charged for it, the previous period and the "
                        "same period last year."),
                     filters=("period", "property", "building", "room", "meter", "level", "granularity", "utility")),
]
