"""QR labels for rooms and devices, and the device page's latest values."""

from __future__ import annotations

import io
import re
from datetime import datetime, timezone
from decimal import Decimal

import zxingcpp
from PIL import Image

from meterhub.devices.labels import parse_room_token, room_token
from meterhub.timeseries.ingest import Reading, ingest


def test_room_label_token_is_signed_and_resolves(app, client, operator, group):
    token = room_token(app.config["SECRET_KEY"], group.group_id, group.room_id)
    assert parse_room_token(app.config["SECRET_KEY"], token) == (group.group_id, group.room_id)
    assert parse_room_token(app.config["SECRET_KEY"], token[:-2] + "xx") is None
    assert parse_room_token("another key", token) is None
    assert client.get(f"/r/{token[:-2]}xx").status_code == 404
    operator("property_manager")
    page = client.get(f"/labels/buildings/{group.building_id}").get_data(as_text=True)
    assert page.count("<svg") == 1 and "101" in page


def test_device_label_decodes_to_a_payload_the_driver_parses(app, client, operator, group):
    operator("electrician")
    svg = client.get(f"/labels/devices/{group.device_id}.svg")
    assert svg.mimetype == "image/svg+xml"
    from meterhub.plugins import driver_registry
    import segno

    payload = re.search(r"SN=[^<\"]+", _payload_from_db(app, group)).group(0)
    png = io.BytesIO()
    segno.make(payload, error="m").save(png, kind="png", scale=6)
    decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(png.getvalue())))[0].text
    info = driver_registry()["acrel_dtsd1352"].parse_qr(decoded)
    assert info.serial and info.address == "1"


def _payload_from_db(app, group) -> str:
    from meterhub.db import service_session
    from meterhub.devices.labels import device_payload
    from meterhub.devices.models import Device

    with app.app_context(), service_session() as s:
        return device_payload(s.get(Device, group.device_id))


def test_device_page_shows_latest_values(app, client, operator, group):
    from meterhub.db import service_session
    from meterhub.devices.models import Meter
    from sqlalchemy import select

    with app.app_context():
        with service_session() as s:
            meter_id = s.execute(select(Meter.id).where(Meter.device_id == group.device_id)).scalar()
        ingest([Reading(group.group_id, meter_id, datetime(2026, 11, 1, 8, 0, tzinfo=timezone.utc),
                        {"energy_kwh": Decimal("1234.56"), "power_kw": 3.5})], notify=False)
    operator("electrician")
    page = client.get(f"/devices/{group.device_id}").get_data(as_text=True)
    assert "energy_kwh=1234.56" in page and "power_kw=3.5" in page
