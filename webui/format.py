"""The one set of display filters every console and portal page uses (STYLE.md, "The web layer").

    {{ amount|money }}                      ¥1,234.50 (two decimals, half up; None → —)
    {{ value|qty('kWh') }}                  12.35 kWh ; qty('m3') → m³ ; qty('kW', 3) → 3 decimals
    {{ value|usage(meter.utility) }}        kWh for electricity, m³ for water
    {{ ts|when }}                           2026-12-03 21:21 in the display zone (never UTC, never µs)
    {{ ts|when(seconds=True) }}             2026-12-03 21:21:33 (only where seconds matter)
    {{ ts|when(tz=prop.timezone) }}         in that zone; {{ ts|day }} → 2026-12-03
    {{ ts|when_range(end) }}                2026-12-03 21:21 – 22:00 (the end's date only when it differs)
    {{ name_path(prop.name, building.name, room.number, tenant, meter.name) }}   parts joined with " · "
    {{ room|room_path }}                    property · building · room (from a Room)

The display zone is the selected property's, else the group's, else ``BABEL_DEFAULT_TIMEZONE``; pass ``tz`` when
the page shows one property's objects. Every filter takes None and prints an em dash.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Flask, current_app, g, has_request_context, session
from flask_login import current_user

NONE = "—"
UNITS = {"kwh": "kWh", "m3": "m³", "m³": "m³", "kw": "kW", "kvar": "kvar", "v": "V", "a": "A", "%": "%"}
UTILITY_UNITS = {"electricity": "kWh", "water": "m³"}


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        return None
    # NaN, infinities and numbers past what an amount can be (1e309) are shown as typed, never formatted
    return number if number.is_finite() and abs(number) < Decimal("1e18") else None


def money(value: Any, currency: str = "¥") -> str:
    """An amount as ``¥1,234.50`` (``-¥12.00`` below zero); not a number → the value itself."""
    amount = _decimal(value)
    if amount is None:
        return NONE if value in (None, "") else str(value)
    amount = amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    sign = "-" if amount < 0 else ""
    return f"{sign}{currency}{abs(amount):,.2f}"


def qty(value: Any, unit: str = "", places: int = 2) -> str:
    """A quantity with its unit: ``12.35 kWh``, ``1.20 m³`` (``unit`` kWh, m3, kW, V, A, % …)."""
    number = _decimal(value)
    if number is None:
        return NONE if value in (None, "") else str(value)
    shown = f"{number.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP):,.{places}f}"
    unit = UNITS.get(unit.lower(), unit)
    return f"{shown} {unit}" if unit else shown


def usage(value: Any, utility: str = "electricity", places: int = 2) -> str:
    """Consumption in the utility's unit (kWh for electricity, m³ for water)."""
    return qty(value, UTILITY_UNITS.get(utility or "electricity", ""), places)


def display_zone() -> str:
    """The time zone pages show times in: the selected property's, else the group's, else the default."""
    if not has_request_context():
        return current_app.config.get("BABEL_DEFAULT_TIMEZONE", "Asia/Shanghai")
    if "display_zone" not in g:
        g.display_zone = _request_zone()
    return g.display_zone


def _request_zone() -> str:
    from meterhub.extensions import db
    from meterhub.tenants.models import Group, Property

    default = current_app.config.get("BABEL_DEFAULT_TIMEZONE") or "Asia/Shanghai"
    if not getattr(current_user, "is_authenticated", False) or not hasattr(current_user, "group_id"):
        return default
    property_id = session.get("property_id")
    prop = db.session.get(Property, property_id) if isinstance(property_id, int) else None
    if prop is not None and prop.timezone:  # RLS: only the operator's own group's property is visible
        return prop.timezone
    group = db.session.get(Group, current_user.group_id)
    return (group.timezone if group is not None and group.timezone else None) or default


def _zone(tz: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(tz or display_zone())
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("Asia/Shanghai")


def _as_datetime(value: Any) -> datetime | date | None:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return value if isinstance(value, date) else None


def when(value: Any, seconds: bool = False, tz: str | None = None) -> str:
    """A time in the display zone (or ``tz``) to the minute: ``2026-12-03 21:21``; a date as ``2026-12-03``.
    A naive datetime is taken as UTC (how the database returns ``timestamp without time zone``)."""
    moment = _as_datetime(value)
    if moment is None:
        return NONE if value in (None, "") else str(value)
    if not isinstance(moment, datetime):
        return moment.isoformat()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    local = moment.astimezone(_zone(tz))
    return local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def day(value: Any, tz: str | None = None) -> str:
    """The local date of a time (or a date) as ``2026-12-03``."""
    return when(value, tz=tz)[:10] if value not in (None, "") else NONE


def when_range(start: Any, end: Any, tz: str | None = None) -> str:
    """``2026-12-03 21:21 – 22:00``; the end shows its date only when it is another day."""
    first, last = when(start, tz=tz), when(end, tz=tz)
    if last[:10] == first[:10] and len(last) > 10:
        last = last[11:]
    return f"{first} – {last}"


def name_path(*parts: Any) -> str:
    """Human names joined as ``property · building · room · tenant · meter`` (empty parts left out)."""
    return " · ".join(str(part) for part in parts if part not in (None, ""))


def room_path(room: Any, with_property: bool = True) -> str:
    """``property · building · room`` of a Room (its number, and its name when it has one)."""
    if room is None:
        return NONE
    building = room.floor.building
    label = f"{room.number} {room.name}".strip() if getattr(room, "name", "") else room.number
    return name_path(building.property.name if with_property else None, building.name, label)


FILTERS = {"money": money, "qty": qty, "usage": usage, "when": when, "day": day, "when_range": when_range,
           "room_path": room_path}


def register_filters(app: Flask) -> None:
    """The filters above on ``app``'s templates, and ``name_path``/``display_zone`` as template globals."""
    for name, func in FILTERS.items():
        app.add_template_filter(func, name)
    app.add_template_global(name_path, "name_path")
    app.add_template_global(display_zone, "display_zone")
