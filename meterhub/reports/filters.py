"""Report filters: what to report on (property/building/room/meter, utility), for which period, at which level.

A :class:`ReportFilter` is plain data (``to_params`` / ``from_params``) so an export job in an rq worker
runs exactly the query the operator asked for, inside the scope the operator had when asking.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.orm import Session

from ..errors import ValidationError
from ..i18n import _l

LEVELS = ("meter", "room", "building", "property")
GRANULARITIES = ("day", "month", "year")
UTILITIES = ("electricity", "water")


@dataclass
class ReportFilter:
    """The selection of a report run; ``property_ids`` is the operator's scope (None: whole group)."""

    group_id: int
    start: date
    end: date  # exclusive
    property_ids: list[int] | None = None
    property_id: int | None = None
    building_id: int | None = None
    room_id: int | None = None
    meter_id: int | None = None
    utility: str | None = None
    level: str = "meter"
    granularity: str = "day"
    timezone: str = "Asia/Shanghai"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def end_inclusive(self) -> date:
        """The last day of the period (what forms show)."""
        return self.end - timedelta(days=1)

    def start_at(self) -> datetime:
        """Start of the period as an aware datetime (local midnight)."""
        return datetime.combine(self.start, datetime.min.time(), self.tz)

    def end_at(self) -> datetime:
        return datetime.combine(self.end, datetime.min.time(), self.tz)

    def to_params(self) -> dict[str, Any]:
        data = asdict(self)
        data["start"], data["end"] = self.start.isoformat(), self.end.isoformat()
        return data

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ReportFilter:
        data = dict(params)
        data["start"], data["end"] = date.fromisoformat(data["start"]), date.fromisoformat(data["end"])
        return cls(**data)

    def property_sql(self, column: str) -> tuple[str, dict[str, Any]]:
        """A SQL condition limiting ``column`` (a property id column) to the scope and the chosen property."""
        parts, params = [], {}
        if self.property_ids is not None:
            parts.append(f"{column} = ANY(:scope_ids)")
            params["scope_ids"] = list(self.property_ids) or [-1]
        if self.property_id is not None:
            parts.append(f"{column} = :property_id")
            params["property_id"] = self.property_id
        return (" AND " + " AND ".join(parts)) if parts else "", params

    def place_sql(self, property_column: str, room: str | None = None, meter: str | None = None
                  ) -> tuple[str, dict[str, Any]]:
        """SQL conditions (``" AND ..."`` or ``""``) for the scope and the chosen property, building, room, meter.

        ``room`` is an expression for a row's room id (the building and room filters go through it); ``meter``
        a condition on ``:meter_id`` that holds for the rows of that meter. A report that has neither takes no
        such filter (:meth:`unsupported` names what it was given anyway).
        """
        where, params = self.property_sql(property_column)
        for name, value, condition in (
                ("building", self.building_id,
                 room and f"{room} IN (SELECT rb.id FROM rooms rb WHERE rb.building_id = :building_id)"),
                ("room", self.room_id, room and f"{room} = :room_id"), ("meter", self.meter_id, meter)):
            if value is None:
                continue
            if condition is None:
                raise ValueError(f"this report cannot be filtered by {name}")
            where += f" AND {condition}"
            params[f"{name}_id"] = value
        return where, params

    def unsupported(self, accepted: Iterable[str]) -> list[str]:
        """The filters set here that a report accepting ``accepted`` (its ``filters``) would not apply."""
        return [name for name in FILTERABLE if getattr(self, FILTERABLE[name]) is not None and name not in accepted]


#: The object filters a report may accept (``ReportDefinition.filters``) and the field each sets.
FILTERABLE = {"property": "property_id", "building": "building_id", "room": "room_id", "meter": "meter_id",
              "utility": "utility"}


def _int(value: Any) -> int | None:
    text_value = str(value or "").strip()
    return int(text_value) if text_value.isascii() and text_value.isdigit() and len(text_value) < 19 else None


EARLIEST, LATEST = date(1970, 1, 1), date(2999, 12, 31)


def _date(value: Any, default: date, field_name: str) -> date:
    try:
        day = date.fromisoformat(str(value)) if value else default
    except ValueError as err:
        raise ValidationError(_l("%(value)s is not a date; use YYYY-MM-DD.", value=repr(str(value)[:20])),
                              {field_name: "invalid"}) from err
    if not EARLIEST <= day <= LATEST:
        raise ValidationError(_l("%(day)s is out of range; use a date from %(earliest)s to %(latest)s.",
                                 day=day.isoformat(), earliest=EARLIEST, latest=LATEST), {field_name: "out of range"})
    return day


def parse(args: Mapping[str, Any], group_id: int, scope: set[int] | None, timezone: str,
          today: date | None = None) -> ReportFilter:
    """A filter from query-string values; the default period is the last 30 days (end inclusive in forms)."""
    today = today or datetime.now(ZoneInfo(timezone)).date()
    start = _date(args.get("start"), today - timedelta(days=30), "start")
    end = _date(args.get("end"), today, "end") + timedelta(days=1)
    if end <= start:
        raise ValidationError(_l("The end of the period must not be before its start."), {"end": "before start"})
    if (end - start).days > 3700:
        raise ValidationError(_l("A report covers at most ten years."), {"start": "too early"})
    level = args.get("level") or "meter"
    granularity = args.get("granularity") or "day"
    utility = args.get("utility") or None
    if level not in LEVELS or granularity not in GRANULARITIES or (utility and utility not in UTILITIES):
        raise ValidationError(_l("Unknown level, granularity or utility."), {"level": "invalid"})
    return ReportFilter(group_id, start, end, sorted(scope) if scope is not None else None,
                        _int(args.get("property_id")), _int(args.get("building_id")), _int(args.get("room_id")),
                        _int(args.get("meter_id")), utility, level, granularity, timezone)


class MeterInfo(NamedTuple):
    """A meter with where it serves (names for report rows); a named tuple: built in C per result row."""

    id: int
    name: str
    utility: str
    room_id: int | None
    room: str
    building_id: int | None
    building: str
    property_id: int
    property: str


def selected_meters(session: Session, f: ReportFilter) -> list[MeterInfo]:
    """The meters the filter selects, ordered by property, building, room, meter."""
    where, params = f.place_sql("m.property_id", "m.room_id", "m.id = :meter_id")
    if f.utility is not None:
        where, params["utility"] = where + " AND m.utility = :utility", f.utility
    rows = session.execute(text(
        "SELECT m.id, coalesce(nullif(m.name, ''), d.serial || '/' || m.channel), m.utility, m.room_id, "
        "coalesce(r.number, ''), r.building_id, coalesce(b.name, ''), m.property_id, p.name "
        "FROM meters m JOIN devices d ON d.id = m.device_id JOIN properties p ON p.id = m.property_id "
        "LEFT JOIN rooms r ON r.id = m.room_id LEFT JOIN buildings b ON b.id = r.building_id "
        f"WHERE m.group_id = :g{where} ORDER BY p.name, b.name, r.number, m.id"), {"g": f.group_id, **params})
    return list(map(MeterInfo._make, rows.tuples()))
