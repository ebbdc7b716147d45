"""Excel import of gateways and devices: streamed, capped, validated against sets, then written in bulk.

The sheets are read in streaming mode and refused past ``MAX_ROWS`` before the rest is loaded. Every row
is validated in memory against what the group already holds (property codes, gateway names, serials,
addresses, rooms: one query each, not one per row) and against the rows above it; any error stops the
import before anything is written, and the report lists each failing row. Then gateways and devices are
added in one flush. Rows that need more than the database (an MQTT gateway's credentials, reading a device
when ``verify`` is asked) go through :func:`create_gateway` / :func:`onboard_device` as in the console.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..labels import key_of
from ..errors import ValidationError
from ..mqtt_auth.credentials import Credentials, issue_gateway_password
from ..plugins import driver_registry
from ..spreadsheets import open_workbook, stream_rows
from ..tenants.models import Building, Property, Room
from .models import FRAMINGS, Device, Gateway, Meter
from .onboarding import DeviceSpec, create_gateway, normalise_address, onboard_device, validate_host

GATEWAY_COLUMNS = ["property_code", "name", "host", "port", "framing", "baud", "parity", "mqtt_client_id"]
DEVICE_COLUMNS = ["gateway", "driver", "address", "serial", "rooms", "config_json", "name"]
MAX_ROWS = 20000  # data rows per sheet; the header is one more
SERIAL_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


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


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _rows(sheet: Any, columns: list[str], name: str, report: ImportReport) -> list[tuple[int, dict[str, str]]]:
    """Non-blank rows as (row number, {column: text}); streaming, refused past the cap."""
    rows = stream_rows(sheet, MAX_ROWS, name, header=True)
    header = [key_of(_text(c), "import_column") for c in next(rows, (0, ()))[1]]  # keys, or their labels
    missing = [c for c in columns if c not in header]
    if missing:
        report.errors.append((name, 1, f"missing columns: {', '.join(missing)} (download the template)"))
        return []
    out = []
    for number, values in rows:
        if any(v not in (None, "") for v in values):
            out.append((number, {h: _text(v) for h, v in zip(header, values) if h}))
    return out


@dataclass
class _Known:
    """What the group holds already, loaded once: the sets rows are checked against."""

    properties: dict[str, Property]
    gateways: dict[str, Gateway]
    serials: set[tuple[str, str]]
    addresses: set[tuple[str, str]]  # (gateway name, address)
    rooms: dict[tuple[int, str, str], int]  # (property id, building name, room number) -> room id

    @classmethod
    def load(cls, session: Session, group_id: int, allowed: set[int] | None) -> _Known:
        properties = {p.code: p for p in session.execute(select(Property).where(Property.group_id == group_id))
                      .scalars() if allowed is None or p.id in allowed}
        gateways = {g.name: g for g in session.execute(select(Gateway).where(Gateway.group_id == group_id)).scalars()}
        serials = set(session.execute(select(Device.driver_key, Device.serial).where(Device.group_id == group_id))
                      .tuples())
        addresses = set(session.execute(select(Gateway.name, Device.address).join(Device.gateway)
                                        .where(Device.group_id == group_id)).tuples())
        rooms = {(p, b, n): r for r, p, b, n in session.execute(
            select(Room.id, Room.property_id, Building.name, Room.number).join(Building, Building.id == Room.building_id)
            .where(Room.group_id == group_id)).tuples()}
        return cls(properties, gateways, serials, addresses, rooms)


def _gateway(row: dict[str, str], known: _Known) -> Gateway | tuple[Property, dict[str, Any]]:
    """A validated new Gateway (not added), or for an MQTT gateway the property and arguments of create_gateway."""
    prop = known.properties.get(row.get("property_code", ""))
    if prop is None:
        raise ValidationError(f"unknown property code '{row.get('property_code', '')}'")
    name, framing = row.get("name", ""), row.get("framing", "")
    if not name or len(name) > 100:
        raise ValidationError("Gateway name is required (at most 100 characters).")
    if name in known.gateways:
        raise ValidationError(f"A gateway named '{name}' exists already (or is named twice in the file).")
    if framing not in FRAMINGS:
        raise ValidationError(f"Framing '{framing}' is unknown; use one of {', '.join(FRAMINGS)}.")
    bus: dict[str, Any] = {k: row[k] for k in ("baud", "parity") if row.get(k)}
    if "baud" in bus:
        if not bus["baud"].isdecimal() or len(bus["baud"]) > 7:
            raise ValidationError(f"Baud rate '{bus['baud']}' is not a number.")
        bus["baud"] = int(bus["baud"])
    if framing == "mqtt":
        return prop, {"name": name, "host": row.get("host", ""), "port": row.get("port") or 502, "framing": framing,
                      "bus": bus, "mqtt_client_id": row.get("mqtt_client_id") or None}
    port = row.get("port") or "502"
    if not port.isdecimal() or not 1 <= int(port) <= 65535:
        raise ValidationError(f"Port '{port}' is not a number from 1 to 65535.")
    return Gateway(group_id=prop.group_id, property_id=prop.id, name=name, host=validate_host(row.get("host", "")),
                   port=int(port), framing=framing, bus=bus, mqtt_client_id=None)


def _room_ids(known: _Known, property_id: int, text: str) -> list[int | None]:
    """``A/101, A/102`` (building/room per channel, blank for none) -> room ids."""
    ids: list[int | None] = []
    for part in [p.strip() for p in text.split(",")] if text else []:
        building, _, number = part.rpartition("/")
        room = known.rooms.get((property_id, building, number)) if part else None
        if part and room is None:
            raise ValidationError(f"room '{part}' not found (write building/room, e.g. A/101)")
        ids.append(room)
    return ids


def _device(row: dict[str, str], known: _Known, drivers: dict[str, Any]) -> tuple[Gateway, DeviceSpec, Any]:
    """(gateway, validated spec, driver) of a device row, checked against the known sets."""
    gateway = known.gateways.get(row.get("gateway", ""))
    if gateway is None:
        raise ValidationError(f"unknown gateway '{row.get('gateway', '')}'")
    driver = drivers.get(row.get("driver", ""))
    if driver is None:
        raise ValidationError(f"Unknown driver '{row.get('driver', '')}'. Installed drivers: "
                              f"{', '.join(sorted(drivers))}.")
    try:
        config = json.loads(row.get("config_json") or "{}")
    except (json.JSONDecodeError, RecursionError) as err:
        raise ValidationError(f"config_json is not valid JSON: {getattr(err, 'msg', 'nested too deep')}") from err
    if not isinstance(config, dict):
        raise ValidationError("config_json must be a JSON object like {\"ct\": 20}")
    try:
        config = driver.validate_config(config)
    except jsonschema.ValidationError as err:
        raise ValidationError(f"Device config is invalid for driver {driver.key}: {err.message}") from err
    serial = row.get("serial", "")
    if not SERIAL_RE.fullmatch(serial):
        raise ValidationError(f"Serial '{serial[:80]}' must be 1–64 letters, digits, '-' or '_'.")
    address = normalise_address(driver, gateway.framing, row.get("address", ""))
    if (driver.key, serial) in known.serials:
        raise ValidationError(f"A {driver.model} with serial {serial} is onboarded already (or listed twice).")
    if (gateway.name, address) in known.addresses:
        raise ValidationError(f"Address {address} on gateway {gateway.name} is used by another device.")
    rooms = _room_ids(known, gateway.property_id, row.get("rooms", ""))[:driver.channels(config)]
    name = row.get("name", "")
    if len(name) > 100:
        raise ValidationError("The device name is longer than 100 characters.")
    return gateway, DeviceSpec(driver.key, address, serial, config, rooms, name), driver


def _new_device(gateway: Gateway, spec: DeviceSpec, driver: Any) -> Device:
    """The Device with one Meter per channel (as onboard_device makes it, unverified), not yet flushed."""
    channels = driver.channels(spec.config)
    utility = driver.manifest.get("utility", "water" if "valve" in driver.capabilities else "electricity")
    rooms = list(spec.room_ids)
    meters = [Meter(group_id=gateway.group_id, property_id=gateway.property_id, channel=channel, utility=utility,
                    room_id=rooms[channel - 1] if channel <= len(rooms) else None, installed_at=spec.installed_at,
                    name=spec.name or f"{driver.model} {spec.serial}" + (f" #{channel}" if channels > 1 else ""))
              for channel in range(1, channels + 1)]
    return Device(group_id=gateway.group_id, property_id=gateway.property_id, gateway=gateway,
                  driver_key=driver.key, address=spec.address, serial=spec.serial, config=spec.config,
                  status="unknown", meters=meters)


def import_workbook(session: Session, group_id: int, data: bytes, *, verify: bool,
                    allowed_property_ids: set[int] | None = None) -> ImportReport:
    """Import gateways then devices; on any error nothing is written (the caller rolls back)."""
    report = ImportReport()
    try:
        book = open_workbook(data)
        try:
            sheets = {key_of(name, "import_column").lower(): book[name] for name in book.sheetnames}
            if "gateways" not in sheets and "devices" not in sheets:
                raise ValidationError("no sheet named Gateways or Devices (download the template)")
            gateway_rows = _rows(sheets["gateways"], GATEWAY_COLUMNS, "Gateways", report) if "gateways" in sheets else []
            device_rows = _rows(sheets["devices"], DEVICE_COLUMNS, "Devices", report) if "devices" in sheets else []
        finally:
            book.close()
    except ValidationError as err:
        report.errors.append(("file", 0, str(err)))
        return report
    known = _Known.load(session, group_id, allowed_property_ids)
    gateways: list[Gateway] = []
    mqtt: list[tuple[int, Property, dict[str, Any]]] = []
    for number, row in gateway_rows:
        try:
            made = _gateway(row, known)
        except ValidationError as err:
            report.errors.append(("Gateways", number, str(err)))
            continue
        if isinstance(made, Gateway):
            gateways.append(made)
            known.gateways[made.name] = made
        else:
            mqtt.append((number, *made))
            known.gateways[made[1]["name"]] = Gateway(group_id=group_id, property_id=made[0].id, name=made[1]["name"],
                                                      framing="mqtt")
    drivers = driver_registry()
    devices: list[tuple[int, Gateway, DeviceSpec, Any]] = []
    for number, row in device_rows:
        try:
            gateway, spec, driver = _device(row, known, drivers)
            if allowed_property_ids is not None and gateway.property_id not in allowed_property_ids:
                raise ValidationError(f"unknown gateway '{gateway.name}'")
        except ValidationError as err:
            report.errors.append(("Devices", number, str(err)))
            continue
        known.serials.add((spec.driver_key, spec.serial))
        known.addresses.add((gateway.name, spec.address))
        devices.append((number, gateway, spec, driver))
    if report.errors:
        return report
    session.add_all(gateways)
    for number, prop, arguments in mqtt:
        try:
            gateway = known.gateways[arguments["name"]] = create_gateway(session, prop, **arguments)
            report.credentials.append((gateway.name, issue_gateway_password(gateway)))
        except ValidationError as err:
            report.errors.append(("Gateways", number, str(err)))
    if report.errors:
        return report
    report.gateways = len(gateways) + len(mqtt)
    if verify:
        session.flush()  # onboard_device reads each device through its (now stored) gateway
    for number, gateway, spec, driver in devices:
        gateway = known.gateways[gateway.name]  # the created MQTT gateway replaces its placeholder
        if verify:
            try:
                onboard_device(session, gateway, spec, verify=True)
            except ValidationError as err:
                report.errors.append(("Devices", number, str(err)))
        else:
            session.add(_new_device(gateway, spec, driver))
    session.flush()
    report.devices = len(devices)
    return report
