"""Dashboards and the room monitor on hand-made data: exact figures, links behind them, scope (issue 16 items 3, 6)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text

from meterhub.db import service_session
from meterhub.devices.models import Meter
from meterhub.models import utcnow
from meterhub.modules.prepaid import accounts, cashier
from meterhub.modules.prepaid.models import PrepaidAccount
from meterhub.timeseries.property_usage import refresh_property
from meterhub.timeseries.rollups import refresh_rollups

from .conftest import add_meters, write_readings

ZONE = ZoneInfo("Asia/Shanghai")


def _today():
    return utcnow().astimezone(ZONE).date()


@pytest.fixture()
def data(app, group, other_group):
    """P1: the fixture's account (100.00 cash) + 30.00 online, its meter offline, a comm fault; P2: an account
    with 50.00 cash at alarm 1 (level 60.00) that runs out in 2 days; usage rows by day; the other group alike."""
    acc1 = group.account_id
    with app.app_context(), service_session() as s:
        cashier.topup(s, group.group_id, acc1, "30.00", "online", "dash-online", actor="t")
        s.execute(text("UPDATE meters SET status = 'offline' WHERE id = :m"), {"m": group.meter_id})
        s.execute(text("UPDATE gateways SET status = 'offline' WHERE id = :g"), {"g": group.gateway2_id})
        meter2 = add_meters(s, group.group_id, group.property2_id, group.gateway2_id, group.room2_id, 1)[0]
        from meterhub.tariffs import service as tariffs
        tariffs.assign(s, group.group_id, "property", group.property2_id,
                       s.get(__import__("meterhub.tariffs.models", fromlist=["Tariff"]).Tariff,
                             s.execute(text("SELECT tariff_id FROM tariff_assignments WHERE scope_id = :p "
                                            "AND scope = 'property'"), {"p": group.property_id}).scalar()))
        acc2 = accounts.create_account(s, group.group_id, group.property2_id, [meter2], room_id=group.room2_id,
                                       customer_name="Dorm tenant", phone="13900000002", alarm1="60.00",
                                       alarm2="10.00", actor="t")
        cashier.topup(s, group.group_id, acc2.id, "50.00", "cash", "dash-p2", actor="t")
        today = _today()
        rows = [(group.property_id, "electricity", today, "12.5"), (group.property_id, "electricity",
                today - timedelta(days=1), "10"), (group.property_id, "water", today, "1.2"),
                (group.property2_id, "electricity", today, "3")]
        for prop, utility, day, usage in rows:
            s.execute(text("INSERT INTO usage_property_daily (group_id, property_id, utility, day, usage, meters, "
                           "computed_at) VALUES (:g, :p, :u, :d, :v, 1, now())"),
                      {"g": group.group_id, "p": prop, "u": utility, "d": day, "v": D(usage)})
        # a stored forecast: 10.00 a day from now → 50.00 lasts 5 days; overwritten to 25.00 a day → 2 days
        s.execute(text("INSERT INTO prepaid_forecasts (account_id, group_id, property_id, computed_at, status, "
                       "balance, days_left, first_fraction, cum_cost, daily_cost) VALUES (:a, :g, :p, now(), 'ok', "
                       "50, 2, 1, ARRAY[0, 25, 50, 75, 100]::numeric[], 25)"),
                  {"a": acc2.id, "g": group.group_id, "p": group.property2_id})
        acc2_id = acc2.id
    other_group.prepaid  # noqa: B018  (money and an account in the other group)
    with app.app_context(), service_session() as s:
        assert s.get(PrepaidAccount, acc2_id).alarm_level == 1
    return {"acc1": acc1, "acc2": acc2_id}


def _section(page: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}".*?(?=</section>|<h2 class="h6 text-body|<div class="row g-3|$)', page, re.S)
    assert match, f"no #{element_id}"
    return match.group(0)


def test_group_dashboard_figures_and_links(client, group, operator, data):
    operator("group_admin", all_properties=True)
    page = client.get("/dashboard/").get_data(as_text=True)
    money = _section(page, "money")
    assert "¥180.00" in money  # 100.00 + 30.00 + 50.00 today
    assert "Counter ¥150.00 · online ¥30.00" in money
    usage = _section(page, "usage")
    assert "15.50 kWh" in usage and "yesterday 10.00 kWh" in usage and "+55%" in usage
    assert "1.20 m³" in usage
    rooms = _section(page, "rooms")
    assert "?status=alarm1" in rooms and "days=3" in rooms
    assert re.search(r'status=alarm1[^"]*">1<', rooms)  # one room at alarm 1
    assert re.search(r'days=3[^"]*">1<', rooms)  # one room runs out within 3 days
    assert re.search(r'status=offline[^"]*">1<', page)  # one offline meter
    assert "Dorm tenant" in _section(page, "running-out")
    assert re.search(r"kind=comm_fault[^>]*>[^<]*</a></td><td class=\"text-end\">2<", page)
    # every link behind a figure answers
    for url in set(re.findall(r'href="(/(?:prepaid/rooms|alarms/|reports/sales|reports/usage|gateways)[^"]*)"',
                              page)):
        assert client.get(url.replace("&amp;", "&")).status_code == 200, url
    link = re.search(r'href="([^"]*gateways\?status=offline[^"]*)">1<', page)  # one offline gateway
    assert link
    gateways = client.get(link.group(1).replace("&amp;", "&")).get_data(as_text=True)  # the list behind it
    assert f"GW2 {group.marker}" in gateways and f"GW {group.marker}" not in gateways
    assert client.get("/").status_code == 200 and "id=\"money\"" in client.get("/").get_data(as_text=True)


def test_property_dashboard_and_scope(client, group, operator, data):
    operator("property_manager", properties=("P1",))
    page = client.get("/dashboard/").get_data(as_text=True)  # a manager of P1 sees P1 only
    money = _section(page, "money")
    assert "¥130.00" in money and "¥180.00" not in money
    assert "15.50 kWh" not in page or "Dorm tenant" not in page
    assert "Dorm tenant" not in page
    assert client.get(f"/dashboard/properties/{group.property2_id}").status_code == 404
    assert client.get(f"/prepaid/rooms?property_id={group.property2_id}").status_code == 404
    page = client.get(f"/dashboard/properties/{group.property_id}").get_data(as_text=True)
    assert "12.50 kWh" in _section(page, "usage")


def test_other_group_sees_nothing_of_ours(client, other_group, login, data):
    username, password, _ = other_group.operator("group_admin", all_properties=True)
    login(username, password)
    page = client.get("/dashboard/").get_data(as_text=True)
    assert "Dorm tenant" not in page and "¥180.00" not in page
    assert "¥100.00" in _section(page, "money")  # the other group's own top-up


def test_monitor_search_filters_sort_and_partial(client, group, operator, data):
    operator("group_admin", all_properties=True)
    page = client.get("/prepaid/rooms").get_data(as_text=True)
    assert 'hx-get="/prepaid/rooms' in page and "htmx.min.js" in page
    assert 'id="room-%d"' % group.room_id in page and 'id="room-%d"' % group.room2_id in page
    found = client.get("/prepaid/rooms?q=13900000002").get_data(as_text=True)  # by phone
    assert 'id="room-%d"' % group.room2_id in found and 'id="room-%d"' % group.room_id not in found
    by_status = client.get("/prepaid/rooms?status=alarm1").get_data(as_text=True)
    assert 'id="room-%d"' % group.room2_id in by_status and 'id="room-%d"' % group.room_id not in by_status
    soon = client.get("/prepaid/rooms?days=3&sort=days").get_data(as_text=True)
    assert 'id="room-%d"' % group.room2_id in soon and "about 2 days" in soon
    by_building = client.get(f"/prepaid/rooms?building={group.building_id}&floor=1").get_data(as_text=True)
    assert 'id="room-%d"' % group.room_id in by_building and 'id="room-%d"' % group.room2_id not in by_building
    partial = client.get("/prepaid/rooms?q=201", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert partial.lstrip().startswith('<div id="monitor-grid"') and "<html" not in partial
    assert client.get("/prepaid/rooms?sort=nope").status_code == 200  # a clear error, the default page
    assert client.get("/prepaid/rooms?days=abc").status_code == 200


@pytest.mark.plain_postgres
def test_property_usage_rollup_from_readings(app, group):
    with app.app_context(), service_session() as s:
        gw = group.gateway_id
        elec = add_meters(s, group.group_id, group.property_id, gw, group.room_id, 2)
        water = add_meters(s, group.group_id, group.property_id, gw, group.room_id, 1, utility="water")
    today = _today()
    midnight = datetime.combine(today, datetime.min.time(), ZONE)
    points = [midnight - timedelta(hours=20), midnight - timedelta(hours=2), midnight + timedelta(minutes=1)]
    rows = []
    for i, ts in enumerate(points):
        rows += [(elec[0], ts, D(100 + 10 * i)), (elec[1], ts, D(50 + 2 * i)), (water[0], ts, None, D(5 + i))]
    with app.app_context(), service_session() as s:
        write_readings(s, group.group_id, rows)
    with app.app_context(), service_session() as s:
        refresh_rollups(s, utcnow() - timedelta(hours=1), [*elec, *water])
        refresh_property(s, group.group_id, group.property_id, "Asia/Shanghai", utcnow(), days=2)
        got = {(u, d): v for u, d, v in s.execute(text(
            "SELECT utility, day, usage FROM usage_property_daily WHERE property_id = :p"), {"p": group.property_id})}
        # yesterday: +10 and +2 kWh, +1 m³; today: the same again
        assert got[("electricity", today - timedelta(days=1))] == D("12")
        assert got[("electricity", today)] == D("12")
        assert got[("water", today)] == D("1")
        top = s.execute(text("SELECT meter_id, usage FROM usage_top_meters WHERE property_id = :p AND "
                             "utility = 'electricity' ORDER BY rank"), {"p": group.property_id}).all()
        if today.day > 1:  # both days in this month
            assert [(m, u) for m, u in top] == [(elec[0], D("20")), (elec[1], D("4"))]
        assert s.execute(select(Meter.id).where(Meter.id == elec[0])).scalar() == elec[0]


def test_alarm_levels_in_days_set_from_the_console(client, app, group, operator, login):
    from tests.conftest import csrf_token

    account_id = group.account_id
    username, password, _ = group.operator("cashier")
    login(username, password)
    token = csrf_token(client, "/prepaid/counter")
    url = f"/prepaid/accounts/{account_id}/alarm-levels"
    form = {"alarm1": "30", "alarm2": "10", "alarm1_days": "5", "alarm2_days": "2", "csrf_token": token}
    assert client.post(url, data=form).status_code in (403, 404)  # a cashier may not change them
    operator("property_manager")
    token = csrf_token(client, "/prepaid/counter")
    bad = client.post(url, data={**form, "alarm2_days": "9", "csrf_token": token}, follow_redirects=True)
    assert "at most alarm level 1 in days" in bad.get_data(as_text=True)
    with app.app_context(), service_session() as s:
        assert s.get(PrepaidAccount, account_id).alarm1_days is None  # nothing changed
    ok = client.post(url, data={**form, "csrf_token": token})
    assert ok.status_code == 302
    with app.app_context(), service_session() as s:
        acc = s.get(PrepaidAccount, account_id)
        assert (acc.alarm1, acc.alarm2, acc.alarm1_days, acc.alarm2_days) == (D("30.00"), D("10.00"), D("5.0"), D("2.0"))
