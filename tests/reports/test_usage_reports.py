"""Usage reports against hand-computed fixtures: per meter/room/property, day/month/year, TOU, monthly report."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from meterhub.db import service_session
from meterhub.reports.filters import ReportFilter
from meterhub.reports.usage import monthly_rows, usage_rows
from tests.alarms.helpers import make_site
from tests.timeseries.usage_writer import day_at, write_usage

TZ = ZoneInfo("Asia/Shanghai")
D = Decimal


def _day(d: date) -> datetime:
    return datetime.combine(d, datetime.min.time(), TZ)


def put_daily(entries: list, group_id, meter_id, day: date, total, sharp=0, peak=0, flat=0, valley=0) -> None:
    """Note a day's usage of a meter; :func:`write_usage` stores it as readings (both backends hold it)."""
    entries.append((group_id, meter_id, day_at(day, TZ), {
        "energy_kwh": total, "energy_sharp_kwh": sharp, "energy_peak_kwh": peak, "energy_flat_kwh": flat,
        "energy_valley_kwh": valley}))


@pytest.fixture()
def usage_site(app, group):
    site = make_site(app, group, n=2)
    m1, m2 = site.meters
    days: list = []
    put_daily(days, site.group_id, m1, date(2026, 3, 1), 10, 1, 3, 4, 2)
    put_daily(days, site.group_id, m1, date(2026, 3, 2), 12, 2, 4, 4, 2)
    put_daily(days, site.group_id, m2, date(2026, 3, 1), 5, 0, 1, 2, 2)
    put_daily(days, site.group_id, m1, date(2026, 2, 10), 8, 0, 2, 4, 2)  # previous month
    put_daily(days, site.group_id, m1, date(2025, 3, 15), 20, 2, 6, 8, 4)  # same month last year
    write_usage(app, days)
    with app.app_context(), service_session() as s:
        s.execute(text("UPDATE meters SET name = CASE WHEN id = :a THEN 'A' ELSE 'B' END WHERE id IN (:a, :b)"),
                  {"a": m1, "b": m2})
        s.execute(text(
            "INSERT INTO prepaid_charges (group_id, meter_id, account_id, interval_start, interval_end, usage, "
            "cost_exact, amount, note, created_at) VALUES (:g, :m, :a, :t0, :t1, 22, 21.5, 21.50, '', now()), "
            "(:g, :m, :a, :t1, :t2, 1, 1, 1.00, '', now())"),
            {"g": site.group_id, "m": m1, "a": site.account_id, "t0": _day(date(2026, 3, 1)),
             "t1": _day(date(2026, 4, 1)), "t2": _day(date(2026, 4, 2))})
    return site


def _filter(site, **kw) -> ReportFilter:
    base = dict(group_id=site.group_id, start=date(2026, 3, 1), end=date(2026, 4, 1))
    return ReportFilter(**{**base, **kw})


def test_daily_per_meter_with_tou_split(app, usage_site):
    site = usage_site
    with app.app_context(), service_session() as s:
        rows = list(usage_rows(s, _filter(site)))
    prop = rows[0][1]
    assert [r[:1] + r[2:] for r in rows] == [
        ("2026-03-01", rows[0][2], "101", "A", "electricity", D(10), D(1), D(3), D(4), D(2)),
        ("2026-03-02", rows[0][2], "101", "A", "electricity", D(12), D(2), D(4), D(4), D(2)),
        ("2026-03-01", rows[0][2], "101", "B", "electricity", D(5), D(0), D(1), D(2), D(2)),
    ]
    assert prop.startswith("Mall ")


def test_levels_and_granularities_sum_up(app, usage_site):
    site = usage_site
    with app.app_context(), service_session() as s:
        room_daily = [(r[0], r[3], r[6]) for r in usage_rows(s, _filter(site, level="room"))]
        assert room_daily == [("2026-03-01", "101", D(15)), ("2026-03-02", "101", D(12))]
        prop_month = [(r[0], r[6], r[7], r[8], r[9], r[10]) for r in
                      usage_rows(s, _filter(site, level="property", granularity="month"))]
        assert prop_month == [("2026-03", D(27), D(3), D(8), D(10), D(6))]
        year = [(r[0], r[4], r[6]) for r in usage_rows(s, _filter(site, start=date(2025, 1, 1), end=date(2027, 1, 1),
                                                                   granularity="year"))]
        assert year == [("2025", "A", D(20)), ("2026", "A", D(30)), ("2026", "B", D(5))]
        only_b = list(usage_rows(s, _filter(site, meter_id=site.meters[1])))
        assert [r[4] for r in only_b] == ["B"]
        assert list(usage_rows(s, _filter(site, property_ids=[]))) == []  # an empty scope sees nothing


def test_comprehensive_monthly_report(app, usage_site):
    site = usage_site
    with app.app_context(), service_session() as s:
        rows = {r[4]: r for r in monthly_rows(s, _filter(site))}
    a = rows["A"]
    # period, property, building, room, meter, utility, total, sharp, peak, flat, valley,
    # sharp+peak %, valley %, cost, previous, MoM %, last year, YoY %
    assert a[0] == "2026-03" and a[6:11] == (D(22), D(3), D(7), D(8), D(4))
    assert a[13] == D("21.50")  # the April charge is not in March
    assert a[11] == D("45.45") and a[12] == D("18.18")  # 10/22, 4/22
    assert a[14] == D(8) and a[15] == D("175.00")  # (22-8)/8
    assert a[16] == D(20) and a[17] == D("10.00")  # (22-20)/20
    b = rows["B"]
    assert b[6] == D(5) and b[14] == 0 and b[15] is None and b[17] is None


@pytest.mark.parametrize("level", ["meter", "room", "building", "property"])
@pytest.mark.parametrize("granularity", ["day", "month", "year"])
def test_sql_path_equals_the_rollups_api_path(app, usage_site, level, granularity):
    from meterhub.reports import usage
    from meterhub.reports.filters import selected_meters

    site = usage_site
    f = _filter(site, start=date(2025, 1, 1), end=date(2027, 1, 1), level=level, granularity=granularity)
    bucket = "day" if granularity == "day" else "month"
    with app.app_context(), service_session() as s:
        meters = selected_meters(s, f)
        via_api = list(usage._aggregate(s, meters, f, bucket, f.tz))
        via_sql = list(usage._aggregate_sql(s, meters, f, bucket, f.tz))
    assert via_sql == via_api and via_api
