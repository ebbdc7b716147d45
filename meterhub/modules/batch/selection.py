"""Choosing the meters of a batch: by property, building, floor, status, or a list of meter serials, room labels
and account numbers (typed or in Excel), as the console shows them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ...devices.models import Meter
from ...spreadsheets import open_workbook, stream_rows
from ...tenants import lookup
from ...tenants.models import Room
from ..prepaid.models import MeterState

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
    """Meters named as the console shows them — a meter serial (``SN`` or ``SN/2``), a room label (``A-310``: the
    room's meters) or an account number (its meters) — in ``property_id``; returns (meter ids, keys that named
    nothing there: unknown, ambiguous, or of another property). One query per kind, whatever the list's length."""
    wanted = list(dict.fromkeys(str(k).strip() for k in keys if str(k).strip()))
    found = {kind: lookup.exact_many(session, group_id, kind, wanted, property_id=property_id)
             for kind in ("meter", "room", "account")}
    rooms = {f.id for hits in found["room"].values() for f in hits}
    accounts = {f.id for hits in found["account"].values() for f in hits}
    room_meters: dict[int, list[int]] = {}
    for meter_id, room_id in session.execute(select(Meter.id, Meter.room_id).where(
            Meter.room_id.in_(rooms or {-1}), Meter.active)):
        room_meters.setdefault(room_id, []).append(meter_id)
    account_meters: dict[int, list[int]] = {}
    for meter_id, account_id in session.execute(select(MeterState.meter_id, MeterState.account_id).where(
            MeterState.account_id.in_(accounts or {-1}))):
        account_meters.setdefault(account_id, []).append(meter_id)
    ids: set[int] = set()
    unmatched: list[str] = []
    for key in wanted:
        upper = key.upper()
        if len(found["meter"].get(upper, [])) == 1:
            meters = [found["meter"][upper][0].id]
        elif len(found["room"].get(upper, [])) == 1:
            meters = room_meters.get(found["room"][upper][0].id, [])
        elif len(found["account"].get(upper, [])) == 1:
            meters = account_meters.get(found["account"][upper][0].id, [])
        else:
            meters = []
        if meters:
            ids.update(meters)
        else:  # nothing of that name here, or a room or account without meters: listed back
            unmatched.append(key)
    return sorted(ids), unmatched


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
            if number == 1 and text.lower() in ("meter", "meter_id", "serial", "room", "account", "表号", "房间", "户号",
                                                "仪表", "id"):
                continue
            keys.append(text)
    finally:
        book.close()
    return keys
