"""The live room monitor in Chromium: a top-up made in another request shows on the open page without a reload;
the dashboard's figures link to the lists behind them (issue 16 items 3, 6), in English and Chinese."""

from __future__ import annotations

import pytest

from meterhub.db import service_session
from meterhub.modules.prepaid import cashier
from meterhub.tenants.models import Operator
from tests.browser.conftest import sign_in


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_room_balance_changes_on_the_open_monitor_after_a_topup(page, live_server, app, group, lang):
    app.config["MONITOR_REFRESH_S"] = 1
    account_id, room_id = group.account_id, group.room_id  # 100.00 on room 101
    username, password, operator_id = group.operator("group_admin", all_properties=True)
    with app.app_context(), service_session() as s:  # the operator's language
        s.get(Operator, operator_id).locale = lang
    sign_in(page, live_server, username, password)
    page.goto(f"{live_server}/prepaid/rooms")
    assert page.locator("h1").inner_text().strip() == ("Room monitor" if lang == "en" else "房间监控")
    tile = page.locator(f"#room-{room_id} .balance")
    assert tile.inner_text() == "¥100.00"
    page.evaluate("window.__marker = 'no reload'")
    with app.app_context(), service_session() as s:  # another request: the cashier's top-up
        cashier.topup(s, group.group_id, account_id, "25.50", "cash", f"live-{lang}", actor="t")
    page.wait_for_function(f"document.querySelector('#room-{room_id} .balance').textContent.trim() === '¥125.50'",
                           timeout=20000)
    assert page.evaluate("window.__marker") == "no reload"  # the grid changed in place


def test_dashboard_figure_opens_its_filtered_list(page, live_server, app, group):
    with app.app_context(), service_session() as s:
        from sqlalchemy import text

        s.execute(text("UPDATE prepaid_accounts SET alarm1 = 150 WHERE id = :a"), {"a": group.account_id})
        from meterhub.modules.prepaid.control import evaluate_accounts

        evaluate_accounts(s, [group.account_id])
    username, password, _ = group.operator("group_admin", all_properties=True)
    sign_in(page, live_server, username, password)
    page.goto(f"{live_server}/dashboard/")
    page.click("#rooms a[href*='status=alarm1']")
    page.wait_for_url("**/prepaid/rooms?status=alarm1**")
    assert page.locator(f"#room-{group.room_id}").count() == 1
