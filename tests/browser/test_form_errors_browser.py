"""Refused forms in Chromium, zh-CN: the counter's top-up on the account page (desktop), a building's bulk rooms and
a price plan version (phone): the message is visible right under the bad field, in Chinese, what was typed stays,
and the cursor is in that field (screenshots in test-artifacts/forms-all/ for a person to look at)."""

from __future__ import annotations

from tests.api.world import open_site
from tests.browser.conftest import ARTIFACTS, sign_in

SHOTS = ARTIFACTS / "forms-all"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


def _refused(page, name: str, typed: str, shot: str) -> str:
    """The field ``name`` after its form was refused: focused, marked, ``typed`` kept, its message under it."""
    field = page.locator(f"[name={name}][aria-invalid=true]")
    field.wait_for()
    assert page.evaluate("document.activeElement.name") == name
    assert field.input_value() == typed
    message = page.locator("#" + field.get_attribute("aria-describedby"))
    assert message.is_visible()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{shot}.png"), full_page=True)
    box, under = page.evaluate("""([f, m]) => [document.querySelector(`[name=${f}][aria-invalid=true]`),
        document.getElementById(m)].map(e => { const r = e.getBoundingClientRect(); return {x: r.x, top: r.top,
        bottom: r.bottom}; })""", [name, field.get_attribute("aria-describedby")])  # one moment (the page scrolls)
    assert under["top"] >= box["bottom"] - 1 and abs(under["x"] - box["x"]) < 4, (box, under)
    return message.inner_text()


def test_refused_forms_in_chinese_on_desktop_and_phone(browser, live_server, app, group):
    site = open_site(app, group)
    admin = group.operator("group_admin", all_properties=True)
    desktop = browser.new_context(viewport=DESKTOP, locale="zh-CN")
    page = desktop.new_page()
    sign_in(page, live_server, admin[0], admin[1])
    page.goto(f"{live_server}/prepaid/accounts/{site.account_id}")
    page.locator("#topup-amount").fill("12.345")
    page.locator("#topup-form button").click()
    assert "小数" in _refused(page, "amount", "12.345", "desktop-zh-topup-refused")
    desktop.close()

    phone = browser.new_context(viewport=PHONE, locale="zh-CN")
    page = phone.new_page()
    sign_in(page, live_server, admin[0], admin[1])
    page.goto(f"{live_server}/buildings/{group.building_id}")
    page.locator("input[name=floor_to]").fill("")
    page.locator("input[name=floor_to]").type("2")
    page.locator("input[name=room_to]").fill("")
    page.locator("input[name=room_to]").type("0")
    page.locator("input[name=room_from]").fill("05")
    page.locator("form:has(input[name=floor_to]) button").click()
    assert "范围" in _refused(page, "room_to", "0", "phone-zh-bulk-rooms-refused")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.goto(f"{live_server}/tariffs/{group.tariff_id}/versions/new")
    page.locator("input[name=effective_date]").fill("2030-01-01")
    page.locator("input[name=price_flat]").fill("一块")
    page.locator("form button.btn-primary").click()
    assert "单价" in _refused(page, "price_flat", "一块", "phone-zh-tariff-version-refused")
    phone.close()
