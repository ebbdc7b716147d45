"""Excel (xlsx) import and export of gateways and devices, in one format both ways.

Import (:mod:`.excel_import`) is all or nothing: every row is validated before anything is written; any
error leaves the database as it was and the report lists each failing row with its reason.
"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..i18n import _l
from ..labels import label
from ..spreadsheets import append_row, new_workbook, workbook_bytes
from ..tenants.models import Property, Room
from .excel_import import DEVICE_COLUMNS, GATEWAY_COLUMNS, MAX_ROWS, ImportReport, import_workbook
from .models import Gateway

__all__ = ["DEVICE_COLUMNS", "GATEWAY_COLUMNS", "MAX_ROWS", "ImportReport", "export_workbook", "import_workbook",
           "template"]


def _heading(key: str) -> str:
    return str(label(key, "import_column"))


def _headers(columns: list[str]) -> list[str]:
    """Column headers in the reader's language (the import reads them back, or the plain keys)."""
    return [_heading(c) for c in columns]


def template() -> bytes:
    """An empty workbook with both sheets, their headers and one example row each."""
    wb = new_workbook()
    gw = wb.create_sheet(_heading("Gateways"))
    append_row(gw, _headers(GATEWAY_COLUMNS), bold=True)
    append_row(gw, ["P1", "GW-1", "192.168.1.50", 502, "modbus-rtu-over-tcp", 9600, "E", ""])
    dev = wb.create_sheet(_heading("Devices"))
    append_row(dev, _headers(DEVICE_COLUMNS), bold=True)
    append_row(dev, ["GW-1", "acrel_dtsd1352", 1, "2301234567", "A/101", "{}", str(_l("Shop 101 main meter"))])
    return workbook_bytes(wb)


def export_workbook(session: Session, group_id: int, property_ids: set[int] | None = None) -> bytes:
    """Gateways and devices in the import format (re-importable into an empty group)."""
    wb = new_workbook()
    gw = wb.create_sheet(_heading("Gateways"))
    append_row(gw, _headers(GATEWAY_COLUMNS), bold=True)
    dev = wb.create_sheet(_heading("Devices"))
    append_row(dev, _headers(DEVICE_COLUMNS), bold=True)
    codes = dict(session.execute(select(Property.id, Property.code).where(Property.group_id == group_id)).all())
    stmt = select(Gateway).where(Gateway.group_id == group_id).order_by(Gateway.name)
    if property_ids is not None:
        stmt = stmt.where(Gateway.property_id.in_(property_ids or {-1}))
    for g in session.execute(stmt).scalars():
        append_row(gw, [codes[g.property_id], g.name, g.host, g.port, g.framing, g.bus.get("baud", ""),
                        g.bus.get("parity", ""), g.mqtt_client_id or ""])
        for d in g.devices:
            rooms = []
            for m in sorted(d.meters, key=lambda m: m.channel):
                room = session.get(Room, m.room_id) if m.room_id else None
                rooms.append(f"{room.floor.building.name}/{room.number}" if room else "")
            append_row(dev, [g.name, d.driver_key, d.address, d.serial, ", ".join(rooms).rstrip(", "),
                             json.dumps(d.config, ensure_ascii=False), d.meters[0].name if d.meters else ""])
    return workbook_bytes(wb)

