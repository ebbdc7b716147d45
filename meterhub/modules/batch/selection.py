"""Choosing the meters of a batch: by property, building, floor, status, an id list or an Excel list."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ...devices.models import Device, Meter
from ...spreadsheets import open_workbook, stream_rows
from ...tenants.models import Room

MAX_ROWS = 20_000


@dataclass
class Selection:
    """Meter ids chosen, and entries of a list that matched nothing (reported back)."""

    meter_ids: list[int]
    unmatched: list[str] = field(default_factory=list)


def select_meters(session: Session, group_id: int, property_id: int, criteria: dict[str, Any]) -> Selection:
    """Active meters of the property matching ``criteria`` (building_id, floor_id, status, meter_ids, keys)."""
    stmt = select(Meter.id).where(Meter.group_id == group_id, Meter.property_id == property_id, Meter.active)
    if criteria.get("building_id") or criteria.get("floor_id"):
        stmt = stmt.join(Room, Room.id == Meter.room_id)
        if criteria.get("building_id"):
            stmt = stmt.where(Room.building_id == int(criteria["building_id"]))
        if criteria.get("floor_id"):
            stmt = stmt.where(Room.floor_id == int(criteria["floor_id"]))
    if criteria.get("status"):
        stmt = stmt.where(Meter.status == str(criteria["status"]))
    unmatched: list[str] = []
    if criteria.get("meter_ids"):
        stmt = stmt.where(Meter.id.in_([int(m) for m in criteria["meter_ids"]]))
    if criteria.get("keys"):
        ids, unmatched = match_keys(session, group_id, property_id, criteria["keys"])
        stmt = stmt.where(Meter.id.in_(ids or [-1]))
    return Selection(sorted(session.execute(stmt).scalars()), unmatched)


def match_keys(session: Session, group_id: int, property_id: int, keys: Iterable[str]) -> tuple[list[int], list[str]]:
    """Meters named by id, device serial or room number; returns (meter ids, keys that matched nothing)."""
    keys = [str(k).strip() for k in keys if str(k).strip()]
    numeric = [int(k) for k in keys if k.isdecimal()]
    rows = session.execute(
        select(Meter.id, Device.serial, Room.number).join(Device, Device.id == Meter.device_id)
        .outerjoin(Room, Room.id == Meter.room_id)
        .where(Meter.group_id == group_id, Meter.property_id == property_id,
               or_(Meter.id.in_(numeric or [-1]), Device.serial.in_(keys), Room.number.in_(keys)))).all()
    ids, seen = set(), set()
    for meter_id, serial, room in rows:
        for key in (str(meter_id), serial, room):
            if key in keys:
                ids.add(meter_id)
                seen.add(key)
    return sorted(ids), [k for k in keys if k not in seen]


def keys_from_excel(data: bytes) -> list[str]:
    """The first column of the first sheet (a header row is skipped when it is not a key); streamed, at most
    ``MAX_ROWS`` rows (refused before the rest of the sheet is read)."""
    book = open_workbook(data)
    keys = []
    try:
        for number, row in stream_rows(book.active, MAX_ROWS, "list"):
            value = row[0] if row else None
            if value is None:
                continue
            text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value).strip()
            if number == 1 and text.lower() in ("meter", "meter_id", "serial", "room", "表号", "房间", "id"):
                continue
            keys.append(text)
    finally:
        book.close()
    return keys
