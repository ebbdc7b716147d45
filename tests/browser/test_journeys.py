"""End-to-end journeys in Chromium: installer onboarding by QR photo, cashier lifting a room out of
arrears until the simulated relay closes, a shop owner paying through the sandbox provider in the portal,
HQ finance exporting the monthly sales report, and a property manager blocked from another property."""

from __future__ import annotations

import io
import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from meterhub.db import service_session
from tests.api.world import open_site
from tests.browser.conftest import sign_in


@pytest.fixture()
def bus():
    from meterhub.plugins import driver_registry
    from tests.test_onboarding import BusThread

    sim = driver_registry()["acrel_dtsd1352"].simulator(3, {"variant": "dtsy1352"})
    thread = BusThread([sim])
    yield thread, sim
    thread.stop()


def _png(payload: str) -> bytes:
    import segno

    buffer = io.BytesIO()
    segno.make(payload, error="m").save(buffer, kind="png", scale=8, border=4)
    return buffer.getvalue()


def test_installer_onboards_a_device_by_uploading_a_qr_photo(page, live_server, app, group, bus, tmp_path):
    from tests.test_onboarding import _gateway

    thread, sim = bus
    gateway_id = _gateway(app, group, thread.port)
    photo = tmp_path / "label.png"
    photo.write_bytes(_png(f"SN={sim.serial};MODEL=DTSY1352;ADDR=3"))
    username, password, _ = group.operator("electrician")
    sign_in(page, live_server, username, password)
    page.goto(f"{live_server}/onboard")
    page.select_option("select[name=gateway_id]", str(gateway_id))
    page.select_option("select[name=driver_key]", "acrel_dtsd1352")
    page.set_input_files("input[name=photo]", str(photo))
    page.click("#onboard button.primary")
    assert sim.serial in page.locator(".flash.ok").inner_text()
    assert "/devices/" in page.url


def test_cashier_tops_up_a_room_in_arrears_and_it_turns_green_when_the_relay_closes(page, live_server, app, group,
                                                                                    bus):
    from meterhub.commands.models import Command
    from meterhub.commands.worker import execute
    from meterhub.devices.models import Meter
    from meterhub.devices.onboarding import DeviceSpec, create_gateway, onboard_device
    from meterhub.modules.prepaid import control
    from meterhub.tenants.models import Property

    thread, sim = bus
    with app.app_context(), service_session() as s:
        gateway = create_gateway(s, s.get(Property, group.property_id), f"GW-J {group.marker}", "127.0.0.1",
                                 thread.port, "modbus-rtu-over-tcp")
        device = onboard_device(s, gateway, DeviceSpec("acrel_dtsd1352", "3", sim.serial, {"variant": "dtsy1352"},
                                                       [group.room_id]), verify=False)
        meter = s.execute(select(Meter).where(Meter.device_id == device.id)).scalar_one()
    site = open_site(app, group, meter_id=meter.id)
    with app.app_context(), service_session() as s:  # in arrears: the control loop opened the relay
        m = s.get(Meter, site.meter_id)
        control.set_desired(s, m, False, actor="test", force=True)
        m.relay_closed = False
        control.evaluate_accounts(s, [site.account_id])
    username, password, _ = group.operator("cashier")
    sign_in(page, live_server, username, password)
    page.goto(f"{live_server}/prepaid/rooms")
    room = page.locator("a.room", has_text="101")
    assert "status-arrears" in room.get_attribute("class")
    room.click()
    page.fill("form[action$='/topup'] input[name=amount]", "100")
    page.click("form[action$='/topup'] button")
    assert "100.00" in page.content()
    with app.app_context(), service_session() as s:
        queued = s.execute(select(Command.id).where(Command.meter_id == site.meter_id, Command.state == "queued",
                                                    Command.kind == "switch")).scalars().all()
    assert queued, "the top-up queues a switch-on"
    def run_command() -> str:  # in a thread: Playwright's loop runs in this one
        with app.app_context():
            return execute(queued[-1])

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(run_command).result(60) == "confirmed"
    page.goto(f"{live_server}/prepaid/rooms")
    assert "status-opened" in page.locator("a.room", has_text="101").get_attribute("class")
    with app.app_context(), service_session() as s:
        assert s.get(Meter, site.meter_id).relay_closed is True


def test_shop_owner_pays_through_the_sandbox_in_the_portal(page, live_server, app, group, monkeypatch):
    from tests.alarms.conftest import run_jobs
    from tests.payments.conftest import make_channel

    codes: dict[str, str] = {}
    monkeypatch.setattr("meterhub.portal.auth.deliver_code",
                        lambda session, groups, phone, code: codes.__setitem__(phone, code) or True)
    app.config["SANDBOX_RETRY_INTERVALS"] = [0, 0]
    site = open_site(app, group)
    make_channel(app, group.group_id)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server}/portal/login")
    page.fill("form[action*='/portal/code'] input[name=phone]", site.phone)
    page.click("#send-code")
    page.wait_for_selector("input[name=code]")
    from tests.portal.conftest import deliver_queued_codes

    assert deliver_queued_codes(app) == 1
    page.fill("input[name=code]", codes[site.phone])
    page.click("button.primary")
    assert page.locator("#balance").inner_text() == "¥0.00"
    page.fill("#topup input[name=amount]", "50")
    page.click("#pay")
    page.wait_for_selector("#sandbox-pay")
    page.click("button[value=pay]")
    page.wait_for_selector("#order")
    assert run_jobs(app) >= 1
    page.wait_for_selector("text=Paid", timeout=15000)
    assert page.locator("#balance").inner_text() == "¥50.00"
    page.click("text=Back to my account")
    assert page.locator("#balance").inner_text() == "¥50.00"


def test_hq_finance_exports_the_monthly_sales_report(page, live_server, app, group, tmp_path):
    from openpyxl import load_workbook

    from meterhub.modules.prepaid import cashier
    from tests.alarms.conftest import run_jobs

    site = open_site(app, group)
    with app.app_context(), service_session() as s:
        cashier.topup(s, group.group_id, site.account_id, "88.00", "cash", uuid.uuid4().hex, actor="cashier-x")
    username, password, _ = group.operator("group_finance", all_properties=True)
    sign_in(page, live_server, username, password)
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date()  # the group's calendar, not the host's
    page.goto(f"{live_server}/reports/sales?start={today.replace(day=1).isoformat()}&end={today.isoformat()}")
    page.click("text=Export to Excel")
    page.wait_for_url("**/reports/exports/*")
    assert run_jobs(app, "reports") >= 1
    page.reload()
    with page.expect_download() as info:
        page.click("text=Download xlsx")
    target = tmp_path / info.value.suggested_filename
    info.value.save_as(target)
    assert target.suffix == ".xlsx"
    sheet = load_workbook(target, read_only=True).active
    cells = [str(c) for row in sheet.iter_rows(values_only=True) for c in row if c is not None]
    assert any("88" in c for c in cells), cells


def test_property_manager_cannot_reach_another_propertys_room_by_url(page, live_server, app, group):
    other = open_site(app, group, group.room2_id, group.property2_id)
    username, password, _ = group.operator("property_manager", ("P1",))
    sign_in(page, live_server, username, password)
    assert page.goto(f"{live_server}/rooms/{group.room_id}").status == 200
    assert page.goto(f"{live_server}/rooms/{group.room2_id}").status == 404
    assert page.goto(f"{live_server}/prepaid/accounts/{other.account_id}").status == 404
    assert "Not found" in page.content()
