"""Onboarding through the console: QR photo -> driver parse -> read the device -> save; Excel import."""

from __future__ import annotations

import asyncio
import io
import threading

import pytest
import segno
from openpyxl import Workbook, load_workbook
from sqlalchemy import func, select

from meterhub.db import service_session
from meterhub.devices.models import Device, Gateway, Meter
from meterhub.devices.onboarding import create_gateway
from meterhub.plugins import driver_registry
from meterhub.simulator.server import SimServer
from meterhub.tenants.models import Property
from tests.conftest import csrf_token


class BusThread:
    """A simulated RS485 bus (our SimServer) on its own event loop in a thread."""

    def __init__(self, devices, framing: str = "rtu", **server_options) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = SimServer(devices, framing=framing, **server_options)
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        self.port = self.server.port

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture()
def sim_meter():
    driver = driver_registry()["acrel_dtsd1352"]
    sim = driver.simulator(3, {"variant": "dtsy1352"})
    bus = BusThread([sim])
    yield bus, sim.serial
    bus.stop()


def _gateway(app, tenant, port: int, name: str = "GW-SIM") -> int:
    with app.app_context(), service_session() as s:
        prop = s.get(Property, tenant.property_id)
        return create_gateway(s, prop, f"{name}-{tenant.marker}", "127.0.0.1", port, "modbus-rtu-over-tcp").id


def _qr_png(payload: str) -> bytes:
    buffer = io.BytesIO()
    segno.make(payload, error="m").save(buffer, kind="png", scale=8, border=4)
    return buffer.getvalue()


def _devices(app, gateway_id: int) -> list[Device]:
    with app.app_context(), service_session() as s:
        return list(s.execute(select(Device).where(Device.gateway_id == gateway_id)).scalars())


def test_qr_photo_onboards_a_device_that_answers(app, client, operator, group, sim_meter):
    bus, serial = sim_meter
    gateway_id = _gateway(app, group, bus.port)
    operator("electrician")
    token = csrf_token(client, "/onboard")
    response = client.post("/onboard", data={
        "csrf_token": token, "gateway_id": gateway_id, "driver_key": "acrel_dtsd1352",
        "photo": (io.BytesIO(_qr_png(f"SN={serial};MODEL=DTSY1352;ADDR=3")), "label.png"),
        "room_ids": str(group.room_id)}, content_type="multipart/form-data")
    assert response.status_code == 302, response.get_data(as_text=True)
    [device] = _devices(app, gateway_id)
    assert device.serial == serial and device.address == "3" and device.config["variant"] == "dtsy1352"
    with app.app_context(), service_session() as s:
        meters = list(s.execute(select(Meter).where(Meter.device_id == device.id)).scalars())
    assert [(m.channel, m.room_id) for m in meters] == [(1, group.room_id)]
    # The same serial again is refused.
    again = client.post("/onboard", data={"csrf_token": token, "gateway_id": gateway_id,
                                          "driver_key": "acrel_dtsd1352",
                                          "qr_payload": f"SN={serial};MODEL=DTSY1352;ADDR=3"})
    assert again.status_code == 422 and "onboarded already" in again.get_data(as_text=True)


def test_serial_mismatch_and_silent_device_are_refused_with_reasons(app, client, operator, group, sim_meter):
    bus, serial = sim_meter
    gateway_id = _gateway(app, group, bus.port)
    operator("electrician")
    token = csrf_token(client, "/onboard")
    wrong = client.post("/onboard", data={"csrf_token": token, "gateway_id": gateway_id,
                                          "driver_key": "acrel_dtsd1352",
                                          "qr_payload": "SN=999999999999;MODEL=DTSY1352;ADDR=3"})
    assert wrong.status_code == 422
    assert f"answers with serial {serial}" in wrong.get_data(as_text=True)
    silent = client.post("/onboard", data={"csrf_token": token, "gateway_id": gateway_id,
                                           "driver_key": "acrel_dtsd1352",
                                           "qr_payload": f"SN={serial};MODEL=DTSY1352;ADDR=9"})
    assert silent.status_code == 422 and "did not answer" in silent.get_data(as_text=True)
    assert _devices(app, gateway_id) == []


@pytest.mark.parametrize("payload, message", [
    ("", "Scan the QR code"),
    ("SN=;MODEL=DTSY1352", "QR"),
    ("x" * 5000, "QR"),
    ("SN=2301;MODEL=ADF300;ADDR=1", "model"),
    ("SN=23011234;ADDR=400", "1–247"),
])
def test_malformed_qr_payloads_get_clear_errors(app, client, operator, group, payload, message):
    gateway_id = _gateway(app, group, 1)
    operator("electrician")
    token = csrf_token(client, "/onboard")
    response = client.post("/onboard", data={"csrf_token": token, "gateway_id": gateway_id,
                                             "driver_key": "acrel_dtsd1352", "qr_payload": payload})
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert _devices(app, gateway_id) == []


def test_photo_without_qr_or_not_an_image(app, client, operator, group):
    gateway_id = _gateway(app, group, 1)
    operator("electrician")
    token = csrf_token(client, "/onboard")
    from PIL import Image

    blank = io.BytesIO()
    Image.new("RGB", (200, 200), "white").save(blank, "PNG")
    for data, message in ((blank.getvalue(), "No QR code found"), (b"not an image", "not a readable image")):
        response = client.post("/onboard", data={"csrf_token": token, "gateway_id": gateway_id,
                                                 "driver_key": "acrel_dtsd1352",
                                                 "photo": (io.BytesIO(data), "x.png")},
                               content_type="multipart/form-data")
        assert response.status_code == 422 and message in response.get_data(as_text=True)


def _workbook(gateways: list[list], devices: list[list]) -> bytes:
    from meterhub.devices.excel import DEVICE_COLUMNS, GATEWAY_COLUMNS

    wb = Workbook()
    ws = wb.active
    ws.title = "Gateways"
    ws.append(GATEWAY_COLUMNS)
    for row in gateways:
        ws.append(row)
    ws = wb.create_sheet("Devices")
    ws.append(DEVICE_COLUMNS)
    for row in devices:
        ws.append(row)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def _count_gateways(app, group) -> int:
    with app.app_context(), service_session() as s:
        return s.execute(select(func.count()).select_from(Gateway).where(Gateway.group_id == group.group_id)).scalar()


def test_excel_import_is_all_or_nothing_with_row_errors(app, client, operator, group):
    operator("property_manager")
    before = _count_gateways(app, group)
    data = _workbook(
        [["P1", "XL-1", "10.0.0.1", 502, "modbus-rtu-over-tcp", 9600, "N", ""],
         ["P1", "XL-2", "10.0.0.2", "five hundred", "modbus-rtu-over-tcp", 9600, "N", ""],
         ["NOPE", "XL-3", "10.0.0.3", 502, "modbus-tcp", "", "", ""]],
        [["XL-1", "acrel_dtsd1352", 1, "111111111111", "", "{}", ""],
         ["XL-1", "no_such_driver", 2, "222222222222", "", "{}", ""],
         ["XL-1", "acrel_dtsd1352", 300, "333333333333", "", "{}", ""],
         ["XL-1", "acrel_dtsd1352", 4, "444444444444", "", "{not json", ""],
         ["XL-1", "acrel_dtsd1352", 5, "555555555555", "Z/999", "{}", ""]])
    token = csrf_token(client, "/devices/import")
    response = client.post("/devices/import", data={"csrf_token": token, "file": (io.BytesIO(data), "d.xlsx")},
                           content_type="multipart/form-data")
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    for expected in ("not a number", "unknown property code", "Unknown driver", "1–247", "not valid JSON",
                     "not found"):
        assert expected in page, expected
    assert _count_gateways(app, group) == before  # nothing half-imported


def test_excel_import_then_export_round_trip(app, client, operator, group):
    operator("property_manager")
    data = _workbook([["P1", "XL-A", "10.0.0.9", 502, "modbus-rtu-over-tcp", 9600, "E", ""]],
                     [["XL-A", "acrel_adf300", 1, "ADF777", f"B {group.marker}/101", '{"circuits": 12}', "Box"]])
    token = csrf_token(client, "/devices/import")
    response = client.post("/devices/import", data={"csrf_token": token, "file": (io.BytesIO(data), "d.xlsx")},
                           content_type="multipart/form-data")
    assert response.status_code == 302, response.get_data(as_text=True)
    exported = load_workbook(io.BytesIO(client.get("/devices/export.xlsx").data))
    rows = list(exported["Devices"].iter_rows(values_only=True))
    row = next(r for r in rows if r[3] == "ADF777")
    assert row[0] == "XL-A" and row[1] == "acrel_adf300" and row[4].startswith(f"B {group.marker}/101")


def test_garbage_upload_is_rejected(client, operator):
    operator("property_manager")
    token = csrf_token(client, "/devices/import")
    response = client.post("/devices/import", data={"csrf_token": token, "file": (io.BytesIO(b"PK\x03\x04junk"), "x.xlsx")},
                           content_type="multipart/form-data")
    assert response.status_code == 422 and "not an xlsx workbook" in response.get_data(as_text=True)


def test_oversized_upload_is_refused_before_it_is_read(app, client, operator):
    operator("property_manager")
    token = csrf_token(client, "/devices/import")
    app.config["MAX_CONTENT_LENGTH"] = 100 * 1024  # small, so the test client does not spool to a temp file
    big = io.BytesIO(b"0" * (200 * 1024))
    response = client.post("/devices/import", data={"csrf_token": token, "file": (big, "big.xlsx")},
                           content_type="multipart/form-data")
    assert response.status_code == 413 and "larger than 100 KB" in response.get_data(as_text=True)


def test_onboarding_stores_what_the_device_answered(app, group):
    """CJ/T 188 DI byte order, ADF300 circuit-count coding and DTSY1352 PT/CT are read off the device and
    stored with it (REGISTERS.md §10), not assumed."""
    from meterhub.devices.onboarding import DeviceSpec, onboard_device

    registry = driver_registry()
    water = registry["water_valve"].simulator("12345678", {"protocol": "cjt188"})
    box = registry["acrel_adf300"].simulator(1, {"circuits": 24, "circuit_coding": "code"})
    meter = registry["acrel_dtsd1352"].simulator(40, {"variant": "dtsy1352", "ct": 40})
    buses = [BusThread([box, meter]), BusThread([water], framing="cjt188", di_order="high_first")]
    try:
        with app.app_context(), service_session() as s:
            prop = s.get(Property, group.property_id)
            rtu = create_gateway(s, prop, f"GW-DET-{group.marker}", "127.0.0.1", buses[0].server.port,
                                 "modbus-rtu-over-tcp")
            cjt = create_gateway(s, prop, f"GW-CJT-{group.marker}", "127.0.0.1", buses[1].port, "cjt188-over-tcp")
            w = onboard_device(s, cjt, DeviceSpec("water_valve", "12345678", "12345678", {"protocol": "cjt188"}))
            b = onboard_device(s, rtu, DeviceSpec("acrel_adf300", 1, box.serial, {"circuits": 24}))
            m = onboard_device(s, rtu, DeviceSpec("acrel_dtsd1352", 40, meter.serial, {"variant": "dtsy1352"}))
            assert w.config["di_order"] == "high_first"
            assert b.config["circuit_coding"] == "code"
            assert (m.config["pt"], m.config["ct"]) == (1, 40)
    finally:
        for bus in buses:
            bus.stop()
