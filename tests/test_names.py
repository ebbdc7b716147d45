"""Human names, never ids (issue 16 item 4): one resolver (meterhub.names) names every subject as property ·
building · room · tenant · meter, in one query per kind, scoped to the group; alarm lists and pages, the
notification log, notification bodies and the operational exports use it, and no template prints a raw subject
key or meter id."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from sqlalchemy import event, text

from meterhub.alarms.engine import raise_alarm
from meterhub.db import service_session
from meterhub.names import meter_name_sql, name_of, parse_subject_key, subject_names
from tests.alarms.helpers import make_site

ROOT = Path(__file__).resolve().parent.parent


def _parts(group, site) -> list[str]:
    return [f"Mall {group.marker}", f"B {group.marker}", "101", f"Holder {group.marker}"]


def test_one_query_per_kind_scoped_to_the_group(app, group, other_group):
    site = make_site(app, group, n=2)
    other = make_site(app, other_group, n=1)
    with app.app_context(), service_session() as s:
        statements = []
        listener = lambda *args: statements.append(args[2])  # noqa: E731 - before_cursor_execute(conn, cursor, sql, ...)
        event.listen(s.get_bind(), "before_cursor_execute", listener)
        try:
            subjects = [("meter", m) for m in site.meters] + [("account", site.account_id), ("gateway", site.gateway_id),
                                                              ("meter", other.meters[0]), ("room", site.room_id)]
            names = subject_names(s, group.group_id, subjects)
        finally:
            event.remove(s.get_bind(), "before_cursor_execute", listener)
        assert len(statements) == 4, "meters, accounts, gateways, rooms: one query each"
        first = str(names[("meter", site.meters[0])])
        assert first.startswith(" · ".join(_parts(group, site))), first
        assert " · " in first and first.split(" · ")[-1], "the meter's own name ends it"
        second = names[("meter", site.meters[1])]
        assert second.tenant == "", "a meter on no account has no tenant"
        assert second.place == f"B {group.marker}-101"
        account = str(names[("account", site.account_id)])
        assert account.startswith(" · ".join(_parts(group, site)))
        assert ("meter", other.meters[0]) not in names, "another group's meter has no name here"
        assert name_of(names, ("meter", other.meters[0])) == f"meter {other.meters[0]}"
        assert str(names[("room", site.room_id)]) == " · ".join(_parts(group, site))
        # the SQL expression of the exports gives the same name
        sql = s.execute(text(f"SELECT {meter_name_sql(':m')}"), {"m": site.meters[0], "g": group.group_id}).scalar()
        assert sql == first
    assert parse_subject_key("meter:12") == ("meter", 12) and parse_subject_key("x:1") is None
    assert parse_subject_key("meter:") is None


def test_alarm_pages_notifications_and_exports_show_names(app, client, group, operator):
    from meterhub.alarms.dispatch import render
    from meterhub.alarms.models import NotifierConfig
    from meterhub.reports.filters import ReportFilter
    from meterhub.reports.operations import alarm_rows, command_rows
    from meterhub.tenants.models import Group
    from meterhub.commands.service import create_command
    from meterhub.devices.models import Meter

    site = make_site(app, group, n=1)
    with app.app_context(), service_session() as s:
        alarm = raise_alarm(s, group.group_id, "overload", meter_id=site.meters[0], detail={"power_kw": "9.1"})
        acc_alarm = raise_alarm(s, group.group_id, "low_balance_1", account_id=site.account_id)
        create_command(s, s.get(Meter, site.meters[0]), "read_now", actor="test")
        config = NotifierConfig(group_id=group.group_id, notifier="webhook", name="hook", settings={})
        message = render(s, config, alarm, s.get(Group, group.group_id))
        alarm_id, acc_alarm_id = alarm.id, acc_alarm.id
        today = alarm.raised_at.date()
        f = ReportFilter(group.group_id, today - timedelta(days=1), today + timedelta(days=2), timezone="Asia/Shanghai")
        exported = list(alarm_rows(s, f)) + list(command_rows(s, f))
    expected = " · ".join(_parts(group, site))
    assert expected in message.body and expected in message.title, message
    assert "meter:" not in message.body and message.payload["subject_name"].startswith(expected)
    cells = [str(c) for row in exported for c in row]
    assert any(c.startswith(expected) for c in cells), cells
    assert not any(re.fullmatch(r"(meter|account):\d+", c) for c in cells)

    operator("group_admin", all_properties=True)
    listing = client.get("/alarms/").get_data(as_text=True)
    assert expected in listing and f"meter:{site.meters[0]}" not in listing
    assert f"account:{site.account_id}" not in listing
    page = client.get(f"/alarms/{alarm_id}").get_data(as_text=True)
    assert expected in page and f"meter:{site.meters[0]}" not in page
    assert f"/prepaid/accounts/{site.account_id}" in client.get(f"/alarms/{acc_alarm_id}").get_data(as_text=True)
    operator("electrician")  # sees alarms (devices) but not accounts: the name, not a link to a 404
    listing = client.get("/alarms/").get_data(as_text=True)
    assert expected in listing and "/prepaid/accounts/" not in listing


#: template text that prints a raw id or subject key where a name belongs
RAW = re.compile(r"\{\{\s*[\w.]*(subject_key|meter_id|account_id|device_id|gateway_id)\s*\}\}")


def test_no_template_prints_a_raw_subject_or_id():
    found = []
    for path in [*ROOT.glob("webui/templates/**/*.html"), *ROOT.glob("meterhub/**/templates/**/*.html")]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in RAW.finditer(line):
                if 'value="' + match.group(0) in line or "value='" + match.group(0) in line:
                    continue  # a form's hidden value, not shown
                found.append(f"{path.relative_to(ROOT)}:{number}: {match.group(0)}")
    assert not found, "\n".join(found)
