"""Accessibility (issue 16 item 10): axe-core (npm, vendored in tests/browser/vendor, loaded only here) finds no
serious or critical violation on the key pages, in English and Chinese; and a cashier serves a customer with the
keyboard alone: search, open the account, top up, receipt."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from meterhub.db import service_session
from tests.api.world import open_site
from tests.browser.conftest import sign_in

AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
BAD = ("serious", "critical")


def violations(page) -> list[str]:
    """Serious and critical axe-core violations of the page as it is now, one line per rule with examples."""
    if not page.evaluate("() => !!window.axe"):
        page.add_script_tag(path=str(AXE))
    found = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
                          ".map(v => ({id: v.id, impact: v.impact, help: v.help,"
                          " nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))")
    return [f"{v['id']} ({v['impact']}): {v['help']} — {', '.join(v['nodes'])}" for v in found if v["impact"] in BAD]


def _check(page, url: str, failures: list[str]) -> None:
    response = page.goto(url, wait_until="networkidle")
    assert response is not None and response.ok, f"{url}: HTTP {response.status if response else '?'}"
    failures += [f"{url} [{page.evaluate('document.documentElement.lang')}]: {v}" for v in violations(page)]


@pytest.mark.slow
@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_key_pages_have_no_serious_or_critical_violations(browser, live_server, app, group, monkeypatch, locale):
    from meterhub.devices.labels import room_token
    from tests.payments.conftest import make_channel
    from tests.portal.conftest import deliver_queued_codes

    site = open_site(app, group)
    make_channel(app, group.group_id)
    failures: list[str] = []
    context = browser.new_context(viewport={"width": 1440, "height": 900}, locale=locale)
    page = context.new_page()
    page.set_default_timeout(20000)
    _check(page, f"{live_server}/login", failures)
    username, password, _ = group.operator("group_admin", all_properties=True)
    sign_in(page, live_server, username, password)
    for path in ("/", "/prepaid/rooms", f"/prepaid/accounts/{site.account_id}", f"/prepaid/counter?q={site.phone}",
                 "/reports/"):
        _check(page, f"{live_server}{path}", failures)
    context.close()

    codes: dict[str, str] = {}
    monkeypatch.setattr("meterhub.portal.auth.deliver_code",
                        lambda session, groups, phone, code: codes.__setitem__(phone, code) or True)
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale=locale, is_mobile=True)
    page = context.new_page()
    page.set_default_timeout(20000)
    _check(page, f"{live_server}/portal/login", failures)
    page.fill("form[action*='/portal/code'] input[name=phone]", site.phone)
    page.click("#send-code")
    page.wait_for_selector("input[name=code]")
    assert deliver_queued_codes(app) == 1
    page.fill("input[name=code]", codes[site.phone])
    page.click("button.primary")
    page.wait_for_selector("#balance")
    failures += [f"portal home: {v}" for v in violations(page)]
    page.fill("#topup input[name=amount]", "50")
    page.click("#pay")
    page.wait_for_selector("#sandbox-pay")
    failures += [f"sandbox pay page: {v}" for v in violations(page)]
    _check(page, f"{live_server}/portal/r/{room_token(app.config['SECRET_KEY'], group.group_id, group.room_id)}",
           failures)
    context.close()
    assert not failures, "\n".join(failures)


def _focused(page) -> dict:
    return page.evaluate("() => { const e = document.activeElement; return {tag: e.tagName.toLowerCase(),"
                         " name: e.getAttribute('name'), id: e.id, href: e.getAttribute('href'),"
                         " text: (e.innerText || e.value || '').trim()}; }")


def _tab_to(page, wanted, limit: int = 80) -> dict:
    """Press Tab until ``wanted(focused)``; fails when it is never reached (not reachable by keyboard)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = _focused(page)
        if wanted(focused):
            return focused
    raise AssertionError("not reachable with the Tab key")


@pytest.mark.slow
def test_cashier_serves_a_customer_with_the_keyboard_alone(page, live_server, app, group):
    site = open_site(app, group)
    username, password, _ = group.operator("cashier")
    page.goto(f"{live_server}/login")
    _tab_to(page, lambda f: f["name"] == "username")
    page.keyboard.type(username)
    _tab_to(page, lambda f: f["name"] == "password")
    page.keyboard.type(password)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server}/")

    page.goto(f"{live_server}/prepaid/counter")
    assert _focused(page)["name"] == "q", "the counter opens with the cursor in its search field"
    page.keyboard.type(site.phone)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/prepaid/counter\?q=.*"))
    _tab_to(page, lambda f: (f["href"] or "").endswith(f"/prepaid/accounts/{site.account_id}"))
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server}/prepaid/accounts/{site.account_id}")

    assert _focused(page)["name"] == "amount", "the account page opens with the cursor in the top-up amount"
    page.keyboard.type("35.50")
    assert _tab_to(page, lambda f: f["name"] == "channel", 3)["tag"] == "select"
    page.keyboard.press("ArrowDown")  # cash → card
    _tab_to(page, lambda f: f["tag"] == "button", 3)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/prepaid/receipts/\d+"))
    assert "¥35.50" in page.locator("#receipt-amount").inner_text()
    assert _focused(page)["id"] == "print-receipt", "the receipt opens ready to print (Enter prints)"
    back = _tab_to(page, lambda f: (f["href"] or "").endswith("/prepaid/counter"), 5)
    assert back["id"] == "next-customer"
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server}/prepaid/counter")
    with app.app_context(), service_session() as s:
        from sqlalchemy import text

        channel = s.execute(text("SELECT channel FROM ledger_transfers WHERE amount = 35.50 AND kind = 'topup' "
                                 "ORDER BY id DESC LIMIT 1")).scalar()
    assert channel == "card"
