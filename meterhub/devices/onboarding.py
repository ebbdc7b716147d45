"""Onboarding: gateways and devices enter the platform only after the device has answered.

Every path (QR in the console, Excel import, the demo fleet file) calls :func:`onboard_device`, which
validates the driver and its config, checks the address and serial, **reads the device before saving**
and creates the Device with one Meter per channel.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jsonschema
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..i18n import _l
from ..errors import ValidationError
from ..mqtt_auth.rules import check_client_id
from ..plugins import driver_registry
from ..protocols.errors import DeviceError
from ..tenants.models import Property, Room
from .models import DIALIN_FRAMINGS, FRAMINGS, Device, Gateway, Meter

#: Gateway framing -> transport framing of ``meterhub.transports.open_transport``.
TRANSPORT_FRAMING = {"modbus-tcp": "tcp", "modbus-rtu-over-tcp": "rtu", "cjt188-over-tcp": "cjt188"}
HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,253})$")
PROBE_TIMEOUT_S = 3.0


def _driver(driver_key: str) -> Any:
    drivers = driver_registry()
    if driver_key not in drivers:
        raise ValidationError(
            _l("Unknown driver '%(driver_key)s'. Installed drivers: %(join)s.",
               driver_key=driver_key, join=', '.join(sorted(drivers))),
            {"driver_key": "unknown"},
        )
    return drivers[driver_key]


def validate_host(host: str) -> str:
    host = (host or "").strip()
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        if HOST_RE.match(host):
            return host
    raise ValidationError(_l("Gateway host '%(host)s' is not an IP address or host name.", host=host), {"host": "invalid"})


def create_gateway(session: Session, prop: Property, name: str, host: str, port: int | str,
                   framing: str, bus: Mapping[str, Any] | None = None, mqtt_client_id: str | None = None) -> Gateway:
    """Validate and add a gateway (a bus) to a property."""
    name = (name or "").strip()
    if not name:
        raise ValidationError(_l("Gateway name is required."), {"name": "required"})
    if framing not in FRAMINGS:
        raise ValidationError(_l("Framing '%(framing)s' is unknown; use one of %(join)s.",
                                 framing=framing, join=', '.join(FRAMINGS)),
                              {"framing": "unknown"})
    try:
        port = int(port)
    except (TypeError, ValueError) as err:
        raise ValidationError(_l("Port '%(port)s' is not a number.", port=port), {"port": "not a number"}) from err
    if framing in DIALIN_FRAMINGS:
        host, port = "", 0  # the meter dials in: nothing to connect to
    elif framing != "mqtt":
        host = validate_host(host)
        if not 1 <= port <= 65535:
            raise ValidationError(_l("Port %(port)s is out of range 1–65535.", port=port), {"port": "range"})
    elif not (mqtt_client_id or "").strip():
        raise ValidationError(_l("An MQTT gateway needs its client id."), {"mqtt_client_id": "required"})
    else:
        mqtt_client_id = check_client_id(mqtt_client_id or "")
    if session.execute(select(Gateway.id).where(Gateway.group_id == prop.group_id, Gateway.name == name)).first():
        raise ValidationError(_l("A gateway named '%(name)s' exists already.", name=name), {"name": "taken"})
    gateway = Gateway(group_id=prop.group_id, property_id=prop.id, name=name, host=host or "", port=port,
                      framing=framing, bus=dict(bus or {}), mqtt_client_id=(mqtt_client_id or None))
    try:
        with session.begin_nested():  # the client id is unique across groups (it is the broker user name)
            session.add(gateway)
            session.flush()
    except IntegrityError as err:
        if "mqtt_client_id" not in str(err.orig):
            raise
        raise ValidationError(_l("MQTT client id '%(mqtt_client_id)s' is already used by another "
                                 "gateway; every gateway needs its own.",
                                 mqtt_client_id=mqtt_client_id), {"mqtt_client_id": "taken"}) from err
    return gateway


def normalise_address(driver: Any, framing: str, address: Any) -> str:
    """The bus address as stored: a Modbus slave id 1–247, or a 14-digit CJ/T 188 address."""
    text = str(address if address is not None else "").strip()
    if framing == "cjt188-over-tcp":
        if not re.fullmatch(r"\d{1,14}", text):
            raise ValidationError(_l("CJ/T 188 address '%(text)s' must be up to 14 digits.", text=text), {"address": "invalid"})
        return text.zfill(14)
    try:
        driver.check_address(text)
    except DeviceError as err:
        raise ValidationError(str(err), {"address": "invalid"}) from err
    return str(int(text))


async def _probe(gateway: Gateway, driver: Any, address: str, config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    from ..driver import DeviceRef
    from ..transports import open_transport

    bus_settings = {k: v for k, v in (gateway.bus or {}).items() if k in ("timeout",)}
    async with open_transport(gateway.host, gateway.port, TRANSPORT_FRAMING[gateway.framing], **bus_settings) as bus:
        detected = await asyncio.wait_for(driver.detect(bus, DeviceRef(address=address, config=config)),
                                          2 * PROBE_TIMEOUT_S)
        ref = DeviceRef(address=address, config={**config, **detected})
        return await asyncio.wait_for(driver.read_identity(bus, ref), PROBE_TIMEOUT_S), detected


def probe_device(gateway: Gateway, driver_key: str, address: str, config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Read the device's serial (and what the driver detects of its config) through its gateway; raise
    ValidationError saying why it failed."""
    if gateway.framing in DIALIN_FRAMINGS:
        return _dialed_in(gateway, address), {}
    if gateway.framing not in TRANSPORT_FRAMING:
        raise ValidationError(_l("Gateway %(name)s is a push gateway; its devices cannot be read on "
                                 "demand.",
                                 name=gateway.name),
                              {"gateway_id": "push"})
    driver = _driver(driver_key)
    try:
        return asyncio.run(_probe(gateway, driver, address, config))
    except (DeviceError, OSError, asyncio.TimeoutError) as err:
        raise ValidationError(
            _l("The device at address %(address)s on gateway %(name)s (%(host)s:%(port)s) did not "
               "answer: %(value)s. Check the wiring, the address and the gateway, then try again.",
               address=address, name=gateway.name, host=gateway.host, port=gateway.port, value=err or type(err).__name__),
            {"address": "no answer"},
        ) from err


def _dialed_in(gateway: Gateway, address: str) -> str:
    """A 4G meter answers by dialing in: the identity it registered with is its serial (any identity that dialed
    in within the last day can be onboarded; the listener attaches it at its next registration)."""
    import json
    import time

    from flask import current_app

    from ..collector.dialin import seen_key
    from ..redis_conn import get_redis

    ns = current_app.config["REDIS_NAMESPACE"]
    seen = {k.decode(): json.loads(v) for k, v in get_redis(current_app).hgetall(seen_key(ns)).items()}
    recent = sorted(serial for serial, info in seen.items() if time.time() - float(info.get("at", 0)) < 86400)
    if not recent:
        raise ValidationError(_l("No 4G meter has dialed in during the last day. Power the meter, check "
                                 "its SIM, APN and server address (the meterhub dialin listener), then "
                                 "try again."),
                              {"serial": "not dialed in"})
    return ",".join(recent)


def same_serial(answered: str, given: str) -> bool:
    """Serials match ignoring case, and numeric ones ignoring leading zeros (BCD addresses are padded)."""
    a, b = answered.strip().upper(), given.strip().upper()
    return a == b or (a.isdigit() and b.isdigit() and int(a) == int(b))


def config_from_qr(driver: Any, model: str | None) -> dict[str, Any]:
    """A QR model that names one of the driver's variants selects that variant (DTSY1352 -> dtsy1352)."""
    variant = driver.config_schema.get("properties", {}).get("variant", {})
    if model and model.lower() in variant.get("enum", ()):
        return {"variant": model.lower()}
    return {}


@dataclass
class DeviceSpec:
    """What onboarding needs to know about one device."""

    driver_key: str
    address: Any
    serial: str
    config: dict[str, Any]
    room_ids: Sequence[int | None] = ()  # per channel; missing channels have no room yet
    name: str = ""
    installed_at: datetime | None = None  # readings dated before it are refused; None: not known


def onboard_device(session: Session, gateway: Gateway, spec: DeviceSpec, *, verify: bool = True) -> Device:
    """Validate, read the device (unless ``verify`` is off), then create it with its meters."""
    driver = _driver(spec.driver_key)
    try:
        config = driver.validate_config(spec.config)
    except jsonschema.ValidationError as err:
        raise ValidationError(_l("Device config is invalid for driver %(key)s: %(message)s",
                                 key=driver.key, message=err.message),
                              {"config": err.message}) from err
    serial = (spec.serial or "").strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", serial):
        raise ValidationError(_l("Serial '%(serial)s' must be 1–64 letters, digits, '-' or '_'.",
                                 serial=serial), {"serial": "invalid"})
    address = normalise_address(driver, gateway.framing, spec.address)
    if session.execute(select(Device.id).where(Device.group_id == gateway.group_id,
                                               Device.driver_key == driver.key, Device.serial == serial)).first():
        raise ValidationError(_l("A %(model)s with serial %(serial)s is onboarded already.",
                                 model=driver.model, serial=serial), {"serial": "taken"})
    if session.execute(select(Device.id).where(Device.gateway_id == gateway.id, Device.address == address)).first():
        raise ValidationError(_l("Address %(address)s on gateway %(name)s is used by another device.",
                                 address=address, name=gateway.name),
                              {"address": "taken"})
    channels = driver.channels(config)
    room_ids = list(spec.room_ids)[:channels]
    if room_ids:
        wanted = {r for r in room_ids if r is not None}
        found = set(session.execute(select(Room.id).where(Room.id.in_(wanted or {-1}),
                                                          Room.property_id == gateway.property_id)).scalars())
        if wanted - found:
            raise ValidationError(_l("A room in the mapping is not in this gateway's property."), {"room_ids": "unknown"})
    if verify:
        answered, detected = probe_device(gateway, driver.key, address, config)
        config = driver.validate_config({**config, **detected})
        if gateway.framing in DIALIN_FRAMINGS:
            if serial not in answered.split(","):
                raise ValidationError(_l("No 4G meter with identity %(serial)s has dialed in during the "
                                         "last day; the identity is on the meter's label and in its "
                                         "registration.",
                                         serial=serial),
                                      {"serial": "not dialed in"})
        elif not same_serial(answered, serial):
            raise ValidationError(
                _l("The device at address %(address)s answers with serial %(answered)s, but %(serial)s "
                   "was given. Scan the label of the device at this address, or fix the address.",
                   address=address, answered=answered, serial=serial), {"serial": "mismatch"})
    answered_at = datetime.now(UTC) if verify else None  # it answered just now: that is its last contact
    device = Device(group_id=gateway.group_id, property_id=gateway.property_id, gateway_id=gateway.id,
                    driver_key=driver.key, address=address, serial=serial, config=config,
                    status="online" if verify else "unknown", last_seen_at=answered_at)
    session.add(device)
    session.flush()
    utility = driver.manifest.get("utility", "water" if "valve" in driver.capabilities else "electricity")
    for channel in range(1, channels + 1):
        room_id = room_ids[channel - 1] if channel <= len(room_ids) else None
        session.add(Meter(group_id=gateway.group_id, property_id=gateway.property_id, device_id=device.id,
                          room_id=room_id, channel=channel, utility=utility, installed_at=spec.installed_at,
                          status=device.status, last_seen_at=answered_at,
                          name=spec.name or f"{driver.model} {serial}" + (f" #{channel}" if channels > 1 else "")))
    session.flush()
    return device


MAX_PHOTO_BYTES = 15 * 1024 * 1024
MAX_PHOTO_PIXELS = 30_000_000  # a 12 MP phone photo is 4000 x 3000; refused from the header, before decoding
QR_PHOTO_SIDE = 3000  # photos are decoded (JPEG) or shrunk (others) to about this size before the QR search


def decode_qr_image(data: bytes) -> str:
    """The text of the first QR code in a photo; ValidationError when there is none or it is not an image.

    The pixel count is read from the header and checked before anything is decoded (a small PNG can claim
    12000 x 12000 pixels and take gigabytes); headers that lie or files that end early are refused too.
    """
    import io

    import zxingcpp
    from PIL import Image, UnidentifiedImageError

    not_image = ValidationError("The upload is not a readable image (JPEG or PNG).", {"photo": "not an image"})
    too_big = ValidationError(f"The photo has more than {MAX_PHOTO_PIXELS // 1_000_000} megapixels; take it at a "
                              "lower resolution or crop it to the label.", {"photo": "too many pixels"})
    if len(data) > MAX_PHOTO_BYTES:
        raise ValidationError(_l("The photo is larger than 15 MB; take a smaller one."), {"photo": "too large"})
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise too_big from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
        raise not_image from err
    width, height = image.size
    if width < 1 or height < 1:
        raise not_image
    if width * height > MAX_PHOTO_PIXELS:
        raise too_big
    try:
        if image.format == "JPEG":
            image.draft("RGB", (QR_PHOTO_SIDE, QR_PHOTO_SIDE))  # decode at 1/2, 1/4 or 1/8 scale when that fits
        image.load()
        if max(image.size) > QR_PHOTO_SIDE:
            image.thumbnail((QR_PHOTO_SIDE, QR_PHOTO_SIDE))
        rgb = image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise too_big from err
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as err:  # truncated or malformed
        raise not_image from err
    for result in zxingcpp.read_barcodes(rgb):
        if result.text:
            return result.text
    raise ValidationError(_l("No QR code found in the photo; hold the camera closer and keep the label "
                             "flat."),
                          {"photo": "no code"})
