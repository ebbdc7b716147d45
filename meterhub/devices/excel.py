"""Excel (xlsx) import and export of gateways and devices, in one format both ways.

Import is all or nothing: every row is validated (and, when asked, every device is read) inside one
transaction; any error rolls everything back and the report lists each failing row with its reason.
"""

from __future__ import annotations

import io
import json
from zipfile import BadZipFile
from dataclasses import dataclass, field
from typing import Any

from openpyxl import Workbook, load_workbook
from openpyxl.utils.exceptions import InvalidFileException
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import ValidationError
from ..tenants.models import Building, Property, Room
from .models import Gateway
from ..mqtt_auth.credentials import Credentials, issue_gateway_password
from .onboarding import DeviceSpec, create_gateway, onboard_device

GATEWAY_COLUMNS = ["property_code", "name", "host", "port", "framing", "baud", "parity", "mqtt_client_id"]
DEVICE_COLUMNS = ["gateway", "driver", "address", "serial", "rooms", "config_json", "name"]
MAX_ROWS = 20000


@dataclass
class ImportReport:
    gateways: int = 0
    devices: int = 0
    errors: list[tuple[str, int, str]] = field(default_factory=list)  # sheet, row number, message
    # the broker passwords of the MQTT gateways created, to show once (only their hashes are stored)
    credentials: list[tuple[str, Credentials]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def template() -> bytes:
    """An empty workbook with both sheets, their headers and one example row each."""
    wb = Workbook()
    gw = wb.active
    gw.title = "Gateways"
    gw.append(GATEWAY_COLUMNS)
    gw.append(["P1", "GW-1", "192.168.1.50", 502, "modbus-rtu-over-tcp", 9600, "E", ""])
    dev = wb.create_sheet("Devices")
    dev.append(DEVICE_COLUMNS)
    dev.append(["GW-1", "acrel_dtsd1352", 1, "2301234567", "A/101", "{}", "Shop 101 main"])
    return _save(wb)


def _save(wb: Workbook) -> bytes:
    buffer = io.BytesIO()
    wb.save(buffer)
    return buffer.getvalue()


def _rows(ws: Any, columns: list[str], sheet: str, report: ImportReport) -> list[tuple[int, dict[str, Any]]]:
    rows = ws.iter_rows(values_only=True)
    header = [str(c).strip() if c is not None else "" for c in next(rows, ())]
    missing = [c for c in columns if c not in header]
    if missing:
        report.errors.append((sheet, 1, f"missing columns: {', '.join(missing)} (download the template)"))
        return []
    out = []
    for number, values in enumerate(rows, start=2):
        if number > MAX_ROWS:
            report.errors.append((sheet, number, f"more than {MAX_ROWS} rows; split the file"))
            break
        if values is None or all(v in (None, "") for v in values):
            continue
        out.append((number, {h: v for h, v in zip(header, values) if h}))
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _room_ids(session: Session, property_id: int, text: str) -> list[int | None]:
    """``A/101, A/102`` (building/room per channel, blank for none) -> room ids."""
    ids: list[int | None] = []
    for part in [p.strip() for p in text.split(",")] if text else []:
        if not part:
            ids.append(None)
            continue
        building, _, number = part.rpartition("/")
        room = session.execute(
            select(Room.id).join(Building, Building.id == Room.building_id)
            .where(Room.property_id == property_id, Building.name == building, Room.number == number)
        ).scalar()
        if room is None:
            raise ValidationError(f"room '{part}' not found (write building/room, e.g. A/101)")
        ids.append(room)
    return ids


def import_workbook(session: Session, group_id: int, data: bytes, *, verify: bool,
                    allowed_property_ids: set[int] | None = None) -> ImportReport:
    """Import gateways then devices; on any error nothing is kept (the caller rolls back)."""
    report = ImportReport()
    try:
        wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (InvalidFileException, BadZipFile, KeyError, OSError, ValueError) as err:
        report.errors.append(("file", 0, f"not an xlsx workbook: {err}"))
        return report
    sheets = {name.lower(): wb[name] for name in wb.sheetnames}
    if "gateways" not in sheets and "devices" not in sheets:
        report.errors.append(("file", 0, "no sheet named Gateways or Devices (download the template)"))
        return report
    props = {p.code: p for p in session.execute(select(Property).where(Property.group_id == group_id)).scalars()
             if allowed_property_ids is None or p.id in allowed_property_ids}
    for number, row in _rows(sheets["gateways"], GATEWAY_COLUMNS, "Gateways", report) if "gateways" in sheets else []:
        try:
            prop = props.get(_text(row.get("property_code")))
            if prop is None:
                raise ValidationError(f"unknown property code '{_text(row.get('property_code'))}'")
            bus = {k: _text(row.get(k)) for k in ("baud", "parity") if _text(row.get(k))}
            if "baud" in bus:
                bus["baud"] = int(bus["baud"])
            with session.begin_nested():
                gateway = create_gateway(session, prop, _text(row.get("name")), _text(row.get("host")),
                                         _text(row.get("port")) or 502, _text(row.get("framing")), bus,
                                         _text(row.get("mqtt_client_id")) or None)
                if gateway.framing == "mqtt":
                    report.credentials.append((gateway.name, issue_gateway_password(gateway)))
            report.gateways += 1
        except (ValidationError, ValueError) as err:
            report.errors.append(("Gateways", number, str(err)))
    gateways = {g.name: g for g in session.execute(select(Gateway).where(Gateway.group_id == group_id)).scalars()}
    for number, row in _rows(sheets["devices"], DEVICE_COLUMNS, "Devices", report) if "devices" in sheets else []:
        try:
            gateway = gateways.get(_text(row.get("gateway")))
            if gateway is None or (allowed_property_ids is not None and gateway.property_id not in allowed_property_ids):
                raise ValidationError(f"unknown gateway '{_text(row.get('gateway'))}'")
            raw_config = _text(row.get("config_json")) or "{}"
            try:
                config = json.loads(raw_config)
            except json.JSONDecodeError as err:
                raise ValidationError(f"config_json is not valid JSON: {err.msg}") from err
            if not isinstance(config, dict):
                raise ValidationError("config_json must be a JSON object like {\"ct\": 20}")
            spec = DeviceSpec(_text(row.get("driver")), _text(row.get("address")), _text(row.get("serial")), config,
                              _room_ids(session, gateway.property_id, _text(row.get("rooms"))), _text(row.get("name")))
            with session.begin_nested():
                onboard_device(session, gateway, spec, verify=verify)
            report.devices += 1
        except ValidationError as err:
            report.errors.append(("Devices", number, str(err)))
    return report


def export_workbook(session: Session, group_id: int, property_ids: set[int] | None = None) -> bytes:
    """Gateways and devices in the import format (re-importable into an empty group)."""
    wb = Workbook(write_only=True)
    gw = wb.create_sheet("Gateways")
    gw.append(GATEWAY_COLUMNS)
    dev = wb.create_sheet("Devices")
    dev.append(DEVICE_COLUMNS)
    codes = dict(session.execute(select(Property.id, Property.code).where(Property.group_id == group_id)).all())
    stmt = select(Gateway).where(Gateway.group_id == group_id).order_by(Gateway.name)
    if property_ids is not None:
        stmt = stmt.where(Gateway.property_id.in_(property_ids or {-1}))
    for g in session.execute(stmt).scalars():
        gw.append([codes[g.property_id], g.name, g.host, g.port, g.framing, g.bus.get("baud", ""),
                   g.bus.get("parity", ""), g.mqtt_client_id or ""])
        for d in g.devices:
            rooms = []
            for m in sorted(d.meters, key=lambda m: m.channel):
                room = session.get(Room, m.room_id) if m.room_id else None
                rooms.append(f"{room.floor.building.name}/{room.number}" if room else "")
            dev.append([g.name, d.driver_key, d.address, d.serial, ", ".join(rooms).rstrip(", "),
                        json.dumps(d.config, ensure_ascii=False), d.meters[0].name if d.meters else ""])
    return _save(wb)

