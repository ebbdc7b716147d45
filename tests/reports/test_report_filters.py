"""Every report takes the place filters it can apply (building, room, meter) and refuses the ones it cannot;
the console's trend chart covers the whole selection, not only the rows the table shows."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from meterhub.alarms.engine import raise_alarm
from meterhub.commands.service import create_command
from meterhub.db import service_session
from meterhub.devices.models import Meter
from meterhub.errors import ValidationError
from meterhub.ledger import run_money_transaction
from meterhub.models import utcnow
from meterhub.names import subject_names
from meterhub.modules.batch.service import create_batch
from meterhub.modules.prepaid import cashier
from meterhub.reports.filters import ReportFilter
from meterhub.reports.registry import get_report
from tests.alarms.helpers import make_site
from tests.api.world import bearer, make_token
from tests.conftest import csrf_token
from tests.timeseries.usage_writer import day_at, write_usage

D = Decimal
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture()
def two_rooms(app, group):
    """A prepaid account in each of the group's two rooms (two buildings, two properties), money on each, an
    alarm, a command and a batch on a meter of each."""
    first, second = make_site(app, group), make_site(app, group, second_room=True)
    with app.app_context(), service_session() as s:
        for site, amount, cashier_name, key in ((first, "100.00", "alice", "a"), (second, "40.00", "bob", "b")):
            run_money_transaction(s, lambda s, site=site, amount=amount, who=cashier_name, key=key: cashier.topup(
                s, site.group_id, site.account_id, amount, "cash", f"k-{key}", actor=who))
            raise_alarm(s, group.group_id, "overload", meter_id=site.meters[0])
            create_command(s, s.get(Meter, site.meters[0]), "read_now", actor=cashier_name)
            create_batch(s, group.group_id, site.property_id, "read_now", {}, {"meter_ids": site.meters},
                         at=utcnow() + timedelta(days=1), actor=cashier_name)
        s.execute(text("UPDATE prepaid_accounts SET overdraft_limit = 0 WHERE group_id = :g"), {"g": group.group_id})
        run_money_transaction(s, lambda s: cashier.refund(s, group.group_id, second.account_id, "40.00", "cash", "k-r",
                                                          actor="bob"))  # the second account is now in arrears
    return first, second


def _today(group) -> date:
    return utcnow().astimezone(ReportFilter(group.group_id, date.today(), date.today()).tz).date()


def _run(app, group, key: str, **place) -> list[tuple]:
    today = _today(group)
    f = ReportFilter(group.group_id, today, today + timedelta(days=2), **place)
    definition = get_report(key)
    with app.app_context(), service_session() as s:
        definition.check(f)
        return list(definition.rows(s, f))


@pytest.mark.parametrize("key, column, first, second", [
    ("sales", 2, {"alice"}, {"bob"}),   # cashier
    ("revenue", 1, {D("100.00")}, {D("40.00")}),  # top-ups
    ("alarms", 2, {"overload"}, {"overload"}),
    ("commands", 8, {"alice"}, {"bob"}),  # who asked
    ("batches", 4, {"alice"}, {"bob"}),
])
def test_building_room_and_meter_select_one_place(app, group, two_rooms, key, column, first, second):
    site1, site2 = two_rooms
    everything = _run(app, group, key)
    by_building = _run(app, group, key, building_id=group.building_id)
    by_room = _run(app, group, key, room_id=group.room2_id)
    by_meter = _run(app, group, key, meter_id=site2.meters[0])
    def seen(rows: list[tuple]) -> set:  # what tells the two places apart (account opening adds commands too)
        return {r[column] for r in rows} & (first | second)

    assert seen(by_building) == first and seen(by_room) == second and seen(by_meter) == second
    if key == "revenue":  # one row per day: the two rooms' sums add up to the whole group's
        assert sum(r[1] for r in by_building + by_room) == sum(r[1] for r in everything) == D("140.00")
    else:  # the two rooms split the rows between them (the tenant's gateway alarms are in no room)
        with app.app_context(), service_session() as s:  # alarms of a gateway or device are in no room
            roomless = set(s.execute(text("SELECT id FROM alarms WHERE group_id = :g AND meter_id IS NULL "
                                          "AND account_id IS NULL"), {"g": group.group_id}).scalars())
        in_rooms = [r for r in everything if key != "alarms" or r[0] not in roomless]
        assert len(by_building) + len(by_room) == len(in_rooms) < len(everything) + (key != "alarms")
    if key in ("alarms", "commands"):  # rows name the meter or subject by its human name: the right one
        with app.app_context(), service_session() as s:
            name = str(subject_names(s, group.group_id, [("meter", site2.meters[0])])[("meter", site2.meters[0])])
        assert by_meter and all(name in r for r in by_meter), (name, by_meter)
    # a meter with no activity of its own (not on an account, no alarm, no command) gives nothing, not everything
    if key in ("sales", "revenue", "alarms", "commands"):
        assert _run(app, group, key, meter_id=site1.meters[1]) == []


def test_arrears_by_place(app, group, two_rooms):
    site1, site2 = two_rooms
    assert [r[5] for r in _run(app, group, "arrears")] == [D("0.00")]
    assert _run(app, group, "arrears", building_id=group.building_id) == []
    assert len(_run(app, group, "arrears", room_id=group.room2_id)) == 1
    assert len(_run(app, group, "arrears", meter_id=site2.meters[0])) == 1
    assert _run(app, group, "arrears", meter_id=site1.meters[0]) == []


def test_a_filter_a_report_cannot_apply_is_refused(app, client, group, operator):
    f = ReportFilter(group.group_id, date(2026, 1, 1), date(2026, 2, 1), room_id=group.room_id)
    with pytest.raises(ValidationError, match="audit report cannot be filtered by room; it takes: period"):
        get_report("audit").check(f)
    with pytest.raises(ValidationError, match="cannot be filtered by utility"):
        get_report("sales").check(ReportFilter(group.group_id, date(2026, 1, 1), date(2026, 2, 1),
                                               utility="water"))
    get_report("usage").check(ReportFilter(group.group_id, date(2026, 1, 1), date(2026, 2, 1), room_id=1,
                                           utility="water"))
    # the API says so (422) instead of answering with the whole group's log
    token = make_token(app, group, "group_finance", scopes=("read",))
    body = client.get("/api/v1/reports/sales?utility=water", headers=bearer(token))
    assert body.status_code == 422 and "cannot be filtered by utility" in body.get_json()["error"]["message"]
    # so does the console
    operator("group_admin")
    page = client.get(f"/reports/audit?room_id={group.room_id}").get_data(as_text=True)
    assert "cannot be filtered by room" in page
    # and scheduling: an audit log e-mailed "for one property" would hold the whole group's log
    with app.app_context(), service_session() as s:
        before = s.execute(text("SELECT count(*) FROM scheduled_reports WHERE group_id = :g"),
                           {"g": group.group_id}).scalar()
    token = csrf_token(client, "/reports/")
    response = client.post("/reports/schedules", data={
        "csrf_token": token, "report": "audit", "frequency": "daily", "hour": "7",
        "recipients": "boss@example.com", "property_id": str(group.property_id)}, follow_redirects=True)
    assert "audit report cannot be filtered by property" in response.get_data(as_text=True)
    with app.app_context(), service_session() as s:
        assert s.execute(text("SELECT count(*) FROM scheduled_reports WHERE group_id = :g"),
                         {"g": group.group_id}).scalar() == before


def _chart(page: str) -> dict:
    labels = json.loads(re.search(r"labels: (\[.*?\]),", page).group(1))
    series = json.loads(re.search(r"datasets: (\[.*?\])\}", page, re.S).group(1))
    return {"labels": labels, "series": {s["label"]: s["data"] for s in series}}


def test_the_usage_chart_covers_every_row_not_only_the_table(app, client, group, operator):
    """2 meters x 300 days = 600 rows; the table shows 500 of them, the chart sums all 600."""
    site = make_site(app, group, n=2)
    start = date(2025, 3, 1)
    write_usage(app, [(group.group_id, m, day_at(start + timedelta(days=d), SHANGHAI),
                       {"energy_kwh": 10 if m == site.meters[0] else 1, "energy_sharp_kwh": 0, "energy_peak_kwh": 2,
                        "energy_flat_kwh": 0, "energy_valley_kwh": 3})
                      for m in site.meters for d in range(300)])
    operator("group_admin")
    end = start + timedelta(days=299)
    page = client.get(f"/reports/usage?start={start}&end={end}&property_id={group.property_id}").get_data(
        as_text=True)
    assert page.count("<tr><td>") == 500
    assert "Showing the first 500 of 600 rows" in page
    chart = _chart(page)
    assert len(chart["labels"]) == 300
    assert set(chart["series"]["Total (kWh / m³)"]) == {11.0}, "every day: both meters (10 + 1)"
    assert set(chart["series"]["Peak kWh"]) == {4.0} and set(chart["series"]["Valley kWh"]) == {6.0}


def test_place_choices_narrow_building_room_meter(app, client, group, operator):
    site = make_site(app, group, n=2)
    operator("group_admin")
    page = client.get("/reports/usage").get_data(as_text=True)
    assert 'name="building_id"' in page and f"B {group.marker}" in page and 'name="room_id"' not in page
    page = client.get(f"/reports/usage?building_id={group.building_id}").get_data(as_text=True)
    assert 'name="room_id"' in page and f'<option value="{group.room_id}"' in page and 'name="meter_id"' not in page
    page = client.get(f"/reports/usage?room_id={group.room_id}").get_data(as_text=True)
    assert all(f'<option value="{m}"' in page for m in site.meters)


def test_the_chart_never_adds_kwh_to_cubic_metres(app, client, group, operator):
    power, water = make_site(app, group, n=1), make_site(app, group, n=1, utility="water", account=False)
    day = date(2026, 2, 3)
    write_usage(app, [(group.group_id, meter, day_at(day, SHANGHAI), {column: value})
                      for meter, column, value in ((power.meters[0], "energy_kwh", 10),
                                                   (water.meters[0], "water_m3", 2))])
    operator("group_admin")
    page = client.get(f"/reports/usage?start={day}&end={day}&level=property").get_data(as_text=True)
    series = _chart(page)["series"]
    assert series == {"Total (kWh / m³) · Electricity": [10.0], "Total (kWh / m³) · Water": [2.0]}
