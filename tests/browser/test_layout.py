"""The console's layout in Chromium: navigation grouped by job that shows only what the role may use, a menu that
collapses on a 390 px phone, and screenshots of the layout (desktop and phone, English and Chinese) in
``test-artifacts/layout/`` for a person to look at."""

from __future__ import annotations

import pytest

from tests.api.world import open_site
from tests.browser.conftest import ARTIFACTS, sign_in

SHOTS = ARTIFACTS / "layout"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


def _context(browser, viewport: dict, locale: str):
    context = browser.new_context(viewport=viewport, locale=locale)
    context.set_default_timeout(15000)
    return context


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _sections(page) -> list[str]:
    return [t.strip() for t in page.locator("#mh-menu > ul.me-auto > li > a").all_inner_texts()]


@pytest.mark.slow
def test_navigation_is_grouped_by_job_and_follows_the_role(browser, live_server, app, group):
    site = open_site(app, group)
    admin = group.operator("group_admin", all_properties=True)
    cashier = group.operator("cashier")
    context = _context(browser, DESKTOP, "en-US")
    page = context.new_page()
    sign_in(page, live_server, admin[0], admin[1])
    assert _sections(page) == ["Monitor", "Money", "Devices", "Reports", "Settings"]
    page.click("#nav-money")
    money = page.locator("#nav-money + .dropdown-menu")
    assert money.is_visible()
    assert "Cashier counter" in money.inner_text()
    _shot(page, "desktop-en-admin-dashboard")
    page.goto(f"{live_server}/prepaid/accounts/{site.account_id}")
    assert "active" in page.locator("#nav-money").get_attribute("class")
    _shot(page, "desktop-en-account")
    context.close()

    context = _context(browser, DESKTOP, "en-US")
    page = context.new_page()
    sign_in(page, live_server, cashier[0], cashier[1])
    sections = _sections(page)
    assert "Devices" not in sections and not any("Settings" in s for s in sections), sections
    assert "Monitor" in sections and "Money" in sections
    assert page.locator("a[href$='/operators/']").count() == 0
    context.close()


@pytest.mark.slow
def test_the_menu_collapses_on_a_phone_in_both_languages(browser, live_server, app, group):
    open_site(app, group)
    admin = group.operator("group_admin", all_properties=True)
    for locale, code in (("en-US", "en"), ("zh-CN", "zh")):
        context = _context(browser, PHONE, locale)
        page = context.new_page()
        page.goto(f"{live_server}/login")
        _shot(page, f"phone-{code}-login")
        sign_in(page, live_server, admin[0], admin[1])
        if code == "zh":
            assert "监控" in page.content() or page.locator("html").get_attribute("lang") == "zh-CN"
        toggler = page.locator(".navbar-toggler")
        assert toggler.is_visible()
        assert not page.locator("#nav-money").is_visible()  # collapsed behind the menu button
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page scrolls sideways on a phone ({width} px)"
        _shot(page, f"phone-{code}-dashboard")
        toggler.click()
        page.locator("#nav-money").click()
        assert page.locator("#nav-money + .dropdown-menu").is_visible()
        _shot(page, f"phone-{code}-menu-open")
        page.goto(f"{live_server}/prepaid/counter")
        _shot(page, f"phone-{code}-counter")
        context.close()
    context = _context(browser, DESKTOP, "zh-CN")
    page = context.new_page()
    sign_in(page, live_server, admin[0], admin[1])
    _shot(page, "desktop-zh-dashboard")
    page.goto(f"{live_server}/alarms/")
    _shot(page, "desktop-zh-alarms")
    for name, path in (("gateways", "/gateways"), ("reports", "/reports/"), ("properties", "/properties"),
                       ("tokens", "/settings/api-tokens/"), ("missing", "/no-such-page")):
        page.goto(f"{live_server}{path}")
        _shot(page, f"desktop-zh-{name}")
    context.close()


@pytest.mark.slow
def test_switch_off_asks_in_a_dialog_naming_the_tenant(browser, live_server, app, group):
    from meterhub.commands.models import Command
    from meterhub.db import service_session

    from meterhub.modules.prepaid import cashier

    site = open_site(app, group)
    with app.app_context(), service_session() as s:  # in credit: the relay is wanted on
        cashier.topup(s, group.group_id, site.account_id, "50.00", "cash", f"k-{site.account_id}", actor="t")
    admin = group.operator("group_admin", all_properties=True)

    def switch_offs() -> int:
        with app.app_context(), service_session() as s:
            return s.query(Command).filter(Command.meter_id == site.meter_id, Command.kind == "switch",
                                           Command.source == "operator").count()

    context = _context(browser, DESKTOP, "en-US")
    page = context.new_page()
    sign_in(page, live_server, admin[0], admin[1])
    page.goto(f"{live_server}/prepaid/accounts/{site.account_id}")
    before = switch_offs()
    off = page.locator("form[data-confirm]:has(input[name=kind][value=off]) button")
    off.click()
    dialog = page.locator("#mh-confirm-modal")
    dialog.wait_for(state="visible")
    assert f"Shop {group.marker}" in dialog.inner_text() and "Switch off" in dialog.inner_text()
    _shot(page, "desktop-en-confirm-switch-off")
    dialog.locator("[data-bs-dismiss=modal].btn").click()  # Cancel: nothing is sent
    dialog.wait_for(state="hidden")
    assert switch_offs() == before
    off.click()
    dialog.wait_for(state="visible")
    dialog.locator(".mh-confirm-ok").click()
    page.locator(".flash.ok").wait_for()
    assert switch_offs() == before + 1
    context.close()


@pytest.mark.slow
def test_the_portal_on_a_phone_uses_the_same_design_system(browser, live_server, app, group, monkeypatch):
    from meterhub.db import service_session
    from meterhub.modules.prepaid import cashier
    from tests.portal.conftest import deliver_queued_codes

    codes: dict[str, str] = {}
    monkeypatch.setattr("meterhub.portal.auth.deliver_code",
                        lambda session, groups, phone, code: codes.__setitem__(phone, code) or True)
    site = open_site(app, group)
    with app.app_context(), service_session() as s:
        cashier.topup(s, group.group_id, site.account_id, "88.50", "cash", f"p-{site.account_id}", actor="t")
    context = _context(browser, PHONE, "zh-CN")
    page = context.new_page()
    page.goto(f"{live_server}/portal/login")
    assert page.locator("link[href$='vendor/bootstrap.min.css']").count() == 1
    _shot(page, "phone-zh-portal-login")
    page.fill("form[action*='/portal/code'] input[name=phone]", site.phone)
    page.click("#send-code")
    page.wait_for_selector("input[name=code]")
    deliver_queued_codes(app)
    page.fill("input[name=code]", codes[site.phone])
    page.click("button.primary")
    for code in ("zh", "en"):
        assert page.locator("#balance").inner_text() == "¥88.50"
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the portal scrolls sideways on a phone ({width} px)"
        _shot(page, f"phone-{code}-portal-account")
        if code == "zh":
            page.click("header button:has-text('English')")  # the language switch in the portal's header
            page.wait_for_selector("html[lang=en]")
    context.close()


@pytest.mark.slow
def test_the_apportioning_preview_scrolls_inside_its_card_on_a_phone(browser, live_server, app, group):
    """The preview's table (account, customer, amount, why) is wider than a phone: it scrolls sideways inside its
    card, the page itself does not."""
    rule_id = group.operations["rule_id"]  # a rule with readings over January 2026
    admin = group.operator("group_admin", all_properties=True)
    for locale, code in (("zh-CN", "zh"), ("en-US", "en")):
        context = _context(browser, PHONE, locale)
        page = context.new_page()
        sign_in(page, live_server, admin[0], admin[1])
        page.goto(f"{live_server}/apportion/rules/{rule_id}?start=2026-01-01&end=2026-02-01")
        table = page.locator("table", has=page.locator("td.text-end")).first
        assert table.is_visible(), "the preview has its table of shares"
        width = page.evaluate("document.documentElement.scrollWidth")
        _shot(page, f"phone-{code}-apportion-preview")
        assert width <= PHONE["width"], f"the preview page scrolls sideways on a phone ({width} px)"
        box = table.evaluate("t => { const w = t.closest('.table-responsive'); "
                             "return w ? [w.clientWidth, w.scrollWidth, getComputedStyle(w).overflowX] : null; }")
        assert box and box[2] == "auto", f"the table is not in a scrolling box: {box}"
        assert box[1] > box[0], f"the table fits the phone, so this test shows nothing: {box}"
        assert box[0] <= PHONE["width"], f"the table's box is wider than the phone: {box}"
        context.close()


@pytest.mark.slow
def test_a_refused_form_says_what_to_fix_beside_the_field_and_puts_the_cursor_there(browser, live_server, app,
                                                                                        group):
    """Billing item and room, desktop, Chinese: the message stands under the bad field, what was typed stays, and
    the cursor is in that field (screenshots for a person to look at)."""
    site = open_site(app, group)
    admin = group.operator("group_admin", all_properties=True)
    context = _context(browser, DESKTOP, "zh-CN")
    page = context.new_page()
    sign_in(page, live_server, admin[0], admin[1])
    page.goto(f"{live_server}/billing-items/")
    form = page.locator("form[action$='/billing-items/new']")
    form.locator("input[name=name]").fill("物业费")
    form.locator("select[name=property_id]").select_option(str(group.property_id))
    form.locator("input[name=rate]").fill("十二元")
    form.locator("input[name=start_date]").fill("2026-01-01")
    form.locator("textarea[name=accounts]").fill(site.account_number)
    form.locator("button.btn-primary").click()
    page.wait_for_selector("#f-rate-error")
    assert page.evaluate("document.activeElement.name") == "rate"
    assert page.locator("#f-rate-error").is_visible() and "单价" in page.locator("#f-rate-error").inner_text()
    assert page.locator("input[name=rate]").input_value() == "十二元"
    assert page.locator("textarea[name=accounts]").input_value() == site.account_number
    _shot(page, "desktop-zh-billing-item-refused")
    page.goto(f"{live_server}/rooms/{group.room_id}")
    page.locator("input[name=area_m2]").fill("很大")
    page.locator("input[name=area_m2]").press("Enter")
    page.wait_for_selector("#f-area_m2-error")
    assert page.evaluate("document.activeElement.name") == "area_m2"
    assert "面积" in page.locator("#f-area_m2-error").inner_text()
    _shot(page, "desktop-zh-room-refused")
    context.close()
