"""The room / account page (issue 16 item 5): a header naming room and tenant with status, balance and switch
state (a meter without a relay says so, never ``?``), labelled tables of money, charges and commands, a usage
chart fed by its own JSON, and a printable receipt."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import text

from meterhub.db import service_session
from meterhub.modules.prepaid import accounts, cashier
from meterhub.modules.prepaid.charging import charge_new_intervals

from .conftest import EPOCH, write_readings


def _headers(html: str, table_id: str) -> list[str]:
    section = html[html.index(f'id="{table_id}"'):]
    head = section[section.index("<thead"):section.index("</thead>")]
    return [re.sub(r"<[^>]+>", "", h).strip() for h in re.findall(r"<th[^>]*>(.*?)</th>", head, re.S)]


def test_account_page_header_tables_chart_and_receipt(world, client, operator):
    with world.app.app_context(), service_session() as s:
        s.execute(text("UPDATE devices SET config = '{\"variant\": \"dtsd1352\"}' WHERE id = "
                       "(SELECT device_id FROM meters WHERE id = :m)"), {"m": world.meters[1]})  # no relay
        s.execute(text("UPDATE meters SET relay_closed = NULL WHERE id = :m"), {"m": world.meters[1]})
        write_readings(s, world.group_id, [(m, EPOCH, Decimal(0)) for m in world.meters[:2]])
    with world.app.app_context(), service_session() as s:
        acc = accounts.create_account(s, world.group_id, world.property_id, world.meters[:2], room_id=world.room_id,
                                      customer_name="Li Lei", phone="13911112222", actor="t", evaluate=False)
        cashier.topup(s, world.group_id, acc.id, "80.00", "cash", "k-1", actor="t")
        account_id = acc.id
    with world.app.app_context(), service_session() as s:  # one hour with usage, one without
        write_readings(s, world.group_id, [(world.meters[0], EPOCH + timedelta(hours=1), Decimal("2.5")),
                                           (world.meters[1], EPOCH + timedelta(hours=1), Decimal(0))])
        charge_new_intervals(s)
    operator("group_admin", all_properties=True)
    html = client.get(f"/prepaid/accounts/{account_id}").get_data(as_text=True)
    assert "Li Lei" in html and "101" in html, "the header names the room and the tenant"
    assert re.search(r'id="balance">¥77\.50<', html), "balance as money (80.00 − 2.5 kWh × 1.00)"
    switches = re.findall(r'<td class="switch-state">(.*?)</td>', html, re.S)
    assert len(switches) == 2 and "no relay" in switches[1] and "?" not in "".join(switches)
    assert "power on" in switches[0]
    assert _headers(html, "money")[:3] == ["Time", "Kind", "Amount"]
    assert _headers(html, "charges")[:4] == ["Interval", "Meter", "Usage", "Amount"]
    charges = html[html.index('id="charges"'):html.index('id="commands"')]
    assert "2.50 kWh" in charges and "¥2.50" in charges
    assert "0.00 kWh" not in charges, "intervals with nothing used are not listed"
    assert 'id="usage-chart"' in html and "chart.umd.min.js" in html
    usage = client.get(f"/prepaid/accounts/{account_id}/usage.json?bucket=month").get_json()
    assert usage["bucket"] == "month" and usage["unit"] == "kWh"
    receipt_url = re.search(r'href="(/prepaid/receipts/\d+)"', html).group(1)
    receipt = client.get(receipt_url).get_data(as_text=True)
    assert "¥80.00" in receipt and "Li Lei" in receipt and "@media print" in receipt and "window.print()" in receipt


def test_counter_shows_takings_receipts_and_balances_before_anything_is_typed(world, client, operator):
    with world.app.app_context(), service_session() as s:
        write_readings(s, world.group_id, [(world.meters[0], EPOCH, Decimal(0))])
    with world.app.app_context(), service_session() as s:
        acc = accounts.create_account(s, world.group_id, world.property_id, world.meters[:1], room_id=world.room_id,
                                      customer_name="Han Mei", phone="13922223333", actor="t", evaluate=False)
        cashier.topup(s, world.group_id, acc.id, "120.00", "cash", "k-c1", actor="t")
        cashier.topup(s, world.group_id, acc.id, "30.00", "card", "k-c2", actor="t")
        account_id = acc.id
    operator("cashier")
    page = client.get("/prepaid/counter").get_data(as_text=True)
    takings = page[page.index('id="takings"'):page.index('id="receipts"')]
    assert 'id="takings-total">¥150.00 · 2<' in takings and 'id="takings-mine">¥0.00 · 0<' in takings
    receipts = page[page.index('id="receipts"'):]
    assert receipts.count("/prepaid/receipts/") == 2 and "Han Mei" in receipts
    found = client.get("/prepaid/counter?q=13922223333").get_data(as_text=True)
    assert f"/prepaid/accounts/{account_id}" in found and "¥150.00" in found
    assert "No account matches" in client.get("/prepaid/counter?q=nobody-here").get_data(as_text=True)
