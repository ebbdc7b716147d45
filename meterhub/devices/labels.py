"""Printable QR labels for devices and rooms (SVG via segno)."""

from __future__ import annotations

import io

import segno
from itsdangerous import BadSignature, URLSafeSerializer

from .models import Device


def device_payload(device: Device) -> str:
    """The label payload of a device: our key=value format, parsed back by its driver (model = variant)."""
    from ..plugins import driver_registry

    driver = driver_registry().get(device.driver_key)
    model = str(device.config.get("variant") or (driver.model if driver else device.driver_key)).upper()
    return f"SN={device.serial};MODEL={model};ADDR={device.address}"


def gateway_credentials_payload(client_id: str, password: str) -> str:
    """The one-time label of a push gateway's broker sign-in (same key=value format as device labels)."""
    return f"MQTT;USER={client_id};CLIENTID={client_id};PASS={password};TOPIC=meterhub/{client_id}/readings"


def room_token(secret_key: str, group_id: int, room_id: int) -> str:
    """A signed, unguessable token naming a room (for its pay-page QR label)."""
    return URLSafeSerializer(secret_key, salt="room-label").dumps([group_id, room_id])


def parse_room_token(secret_key: str, token: str) -> tuple[int, int] | None:
    try:
        group_id, room_id = URLSafeSerializer(secret_key, salt="room-label").loads(token)
    except (BadSignature, ValueError, TypeError):
        return None
    return int(group_id), int(room_id)


def qr_svg(payload: str, scale: int = 4) -> str:
    """An SVG QR code of ``payload`` with error correction M."""
    buffer = io.BytesIO()
    segno.make(payload, error="m").save(buffer, kind="svg", scale=scale, border=2, xmldecl=False)
    return buffer.getvalue().decode()
