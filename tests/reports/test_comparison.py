"""Issue 21 item 9: the cost of a period is what the ledger charged for it ("not charged" where nothing was),
with period-on-period and year-on-year on day, month and year views, at every level (hand-made ledger data)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text

from meterhub.db import service_session
from meterhub.reports.comparison import comparison_rows, previous_period, year_before
from meterhub.reports.usage import monthly_rows
from tests.reports.test_usage_reports import _day, _filter, usage_site  # noqa: F401  (fixture)

D = Decimal


def test_previous_and_year_before_labels():
    assert previous_period("2026-03-01", "day") == "2026-02-28" and previous_period("2026-01", "month") == "2025-12"
    assert previous_period("2026", "year") == "2025" and year_before("2028-02-29", "day") == "2027-02-28"
    assert year_before("2026-03", "month") == "2025-03" and year_before("2026-03-02", "day") == "2025-03-02"


def _charge(app, site, meter, start, end, amount: str) -> None:
    with app.app_context(), service_session() as s:
        s.execute(text(
            "INSERT INTO prepaid_charges (group_id, meter_id, account_id, interval_start, interval_end, usage, "
            "cost_exact, amount, note, created_at) VALUES (:g, :m, :a, :t0, :t1, 1, :x, :x, '', now())"),
            {"g": site.group_id, "m": meter, "a": site.account_id, "t0": start, "t1": end, "x": amount})


def test_daily_view_cost_is_what_was_charged_and_not_charged_elsewhere(app, usage_site):
    site = usage_site
    a, b = site.meters
    day = _day(date(2026, 3, 1))
    _charge(app, site, a, day + timedelta(hours=6), day + timedelta(hours=12), "9.80")
    _charge(app, site, a, day + timedelta(hours=12), day + timedelta(hours=24), "0.20")  # ends at midnight: 1 March's
    with app.app_context(), service_session() as s:
        rows = {(r[0], r[4]): r for r in comparison_rows(s, _filter(site, end=date(2026, 3, 3)))}
    # period, property, building, room, meter, utility, usage, cost, previous, PoP %, last year, YoY %
    first = rows[("2026-03-01", "A")]
    assert first[6] == D(10) and first[7] == D("10.00")
    assert first[8] == D(0) and first[9] is None  # nothing the day before: no % against 0
    second = rows[("2026-03-02", "A")]
    assert second[6] == D(12) and second[7] == "not charged"
    assert second[8] == D(10) and second[9] == D("20.00")  # 12 against 10
    assert rows[("2026-03-01", "B")][7] == "not charged"


@pytest.mark.parametrize("level", ["meter", "room", "property"])
def test_monthly_and_yearly_views_compare_and_cost_at_every_level(app, usage_site, level):
    site = usage_site  # the fixture charged 21.50 for March (interval ending 1 April) and 1.00 for April
    with app.app_context(), service_session() as s:
        month = [r for r in comparison_rows(s, _filter(site, level=level, granularity="month"))]
        year = [r for r in comparison_rows(s, _filter(site, start=date(2026, 1, 1), end=date(2027, 1, 1),
                                                      level=level, granularity="year"))]
        monthly = list(monthly_rows(s, _filter(site, level=level)))
    march = {r[4]: r for r in month} if level == "meter" else {"all": month[0]}
    row = march["A" if level == "meter" else "all"]
    total = D(22) if level == "meter" else D(27)
    assert row[0] == "2026-03" and row[6] == total and row[7] == D("21.50")
    if level == "meter":
        assert row[8] == D(8) and row[9] == D("175.00") and row[10] == D(20) and row[11] == D("10.00")
        assert march["B"][7] == "not charged" and [r[13] for r in monthly if r[4] == "B"] == ["not charged"]
    this_year = [r for r in year if r[0] == "2026"]
    assert sum(r[6] for r in this_year) == D(35) - D(0) and sum(
        r[7] for r in this_year if r[7] != "not charged") == D("22.50")
    assert [r[13] for r in monthly if r[13] != "not charged"] == [D("21.50")]
