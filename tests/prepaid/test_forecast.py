"""Days of money left, hand-worked (issue 16 item 7): steady use, weekday/weekend, tier boundary, no usage,
arrears, a start in the middle of a day, another balance read from the stored curve."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal as D
from zoneinfo import ZoneInfo

from meterhub.modules.prepaid.forecast import MeterOutlook, days_left_on_curve, expected_usage, project
from meterhub.tariffs.pricing import PlanVersion

TZ = "Asia/Shanghai"
ZONE = ZoneInfo(TZ)
MONDAY = datetime(2026, 3, 9, tzinfo=ZONE)  # a Monday, 00:00 local
FLAT = PlanVersion("flat", dict.fromkeys(("sharp", "peak", "flat", "valley"), D("1.00")))
PLANS = ((datetime(2020, 1, 1, tzinfo=ZONE), FLAT),)


def history(per_weekday: dict[int, str] | str, days: int = 28, end: date = MONDAY.date()) -> dict[date, D]:
    """``days`` complete days before ``end``: one usage for every day, or one per weekday (0 = Monday)."""
    out = {}
    for i in range(1, days + 1):
        day = end - timedelta(days=i)
        out[day] = D(per_weekday if isinstance(per_weekday, str) else per_weekday[day.weekday()])
    return out


def test_steady_use_runs_out_midway_through_a_day():
    # 10 kWh a day at 1.00: 45.00 lasts 4 days and a half
    fc = project(D("45.00"), D("0"), [MeterOutlook(history("10"), PLANS)], MONDAY, TZ)
    assert fc.status == "ok"
    assert fc.days_left == D("4.50")
    assert fc.runs_out_at == MONDAY + timedelta(days=4, hours=12)
    assert fc.whole_days == 4
    assert fc.daily_cost == D("10.00")


def test_weekday_weekend_pattern():
    # weekdays 10 kWh, weekends 30 kWh: Mon-Fri 50.00, Sat 30.00 → 80.00 lasts exactly 6 days; 95.00 lasts
    # half of Sunday more (a plain mean of 15.71 a day would have said 5.09 and 6.05)
    pattern = {0: "10", 1: "10", 2: "10", 3: "10", 4: "10", 5: "30", 6: "30"}
    meter = MeterOutlook(history(pattern), PLANS)
    assert project(D("80.00"), D("0"), [meter], MONDAY, TZ).days_left == D("6.00")
    assert project(D("95.00"), D("0"), [meter], MONDAY, TZ).days_left == D("6.50")
    assert expected_usage(meter.daily_usage, date(2026, 3, 14)) == D("30")  # a Saturday


def test_tier_boundary_inside_the_projection():
    # 1.00 per kWh, +0.50 above 100 kWh a month; 80 kWh used this month; 10 kWh a day:
    # day 1 10.00 (80→90), day 2 10.00 (90→100), day 3 15.00, day 4 15.00 → 42.50 lasts 3.5 days (4.25 without tiers)
    tiered = PlanVersion("tiered", FLAT.prices, tiers=((D("100"), D("0.50")),))
    meter = MeterOutlook(history("10"), ((datetime(2020, 1, 1, tzinfo=ZONE), tiered),), period_usage=D("80"))
    fc = project(D("42.50"), D("0"), [meter], MONDAY, TZ)
    assert fc.days_left == D("3.50")
    assert fc.cum_cost[1:5] == (D("10"), D("20"), D("35"), D("50"))


def test_tiers_count_again_in_a_new_month():
    # 2026-03-30 (Monday): 95 kWh used in March; 10 kWh a day, +1.00 above 100 kWh.
    # Mar 30: 95→100 5.00 + 100→105 5×2.00 = 15.00; Mar 31: 20.00; Apr 1: 10.00 (April starts at 0)
    tiered = PlanVersion("tiered", FLAT.prices, tiers=((D("100"), D("1.00")),))
    start = datetime(2026, 3, 30, tzinfo=ZONE)
    meter = MeterOutlook(history("10", end=start.date()), ((datetime(2020, 1, 1, tzinfo=ZONE), tiered),),
                         period_usage=D("95"))
    fc = project(D("40.00"), D("0"), [meter], start, TZ)
    assert fc.cum_cost[1:4] == (D("15"), D("35"), D("45"))
    assert fc.days_left == D("2.50")


def test_not_enough_usage_yet():
    fc = project(D("50.00"), D("0"), [MeterOutlook(history("10", days=2), PLANS)], MONDAY, TZ)
    assert fc.status == "no_usage" and fc.days_left is None and fc.runs_out_at is None
    assert project(D("50.00"), D("0"), [], MONDAY, TZ).status == "no_usage"


def test_already_in_arrears_and_overdraft():
    meter = MeterOutlook(history("10"), PLANS)
    fc = project(D("-1.00"), D("0"), [meter], MONDAY, TZ)
    assert fc.status == "arrears" and fc.days_left == 0
    # an overdraft of 10.00 leaves 5.00 to the trip line: half a day
    assert project(D("-5.00"), D("10.00"), [meter], MONDAY, TZ).days_left == D("0.50")


def test_start_in_the_middle_of_a_day_and_two_meters():
    # from noon: the rest of today is half a day's usage. Two meters of 10 and 6 kWh: 16.00 a day;
    # 24.00 = 8.00 (rest of today) + 16.00 (tomorrow) → 1.5 days
    noon = MONDAY + timedelta(hours=12)
    meters = [MeterOutlook(history("10"), PLANS), MeterOutlook(history("6"), PLANS)]
    fc = project(D("24.00"), D("0"), meters, noon, TZ)
    assert fc.first_fraction == D("0.5")
    assert fc.days_left == D("1.50")
    assert fc.runs_out_at == noon + timedelta(days=1, hours=12)


def test_beyond_the_horizon_and_no_price():
    meter = MeterOutlook(history("0.1"), PLANS)
    assert project(D("1000.00"), D("0"), [meter], MONDAY, TZ).status == "beyond"
    assert project(D("10.00"), D("0"), [MeterOutlook(history("10"), ())], MONDAY, TZ).status == "no_price"


def test_days_left_for_another_balance_read_from_the_curve():
    # computed at Monday 00:00 with 45.00; a day later a top-up leaves 30.00: 3 days from then
    fc = project(D("45.00"), D("0"), [MeterOutlook(history("10"), PLANS)], MONDAY, TZ)
    assert days_left_on_curve(fc.cum_cost, fc.first_fraction, D("1"), D("30.00")) == D("3.00")
    assert days_left_on_curve(fc.cum_cost, fc.first_fraction, D("1.25"), D("5.00")) == D("0.50")
    assert days_left_on_curve(fc.cum_cost, fc.first_fraction, D("1"), D("0")) == 0


def test_flat_shortcut_prices_as_price_interval_does():
    # the flat plan's shortcut and price_interval agree to the sub-cent (a TOU plan without registers goes the
    # general way; its daily cost is the day's usage at the periods' mean weighted by their length)
    from meterhub.tariffs.pricing import price_interval

    usage = D("7.123456")
    t0 = MONDAY
    assert price_interval(FLAT, t0, t0 + timedelta(days=1), TZ, usage).cost == (usage * D("1.00")).quantize(D("1E-8"))
    tou = PlanVersion("tou", {"sharp": D("1.2"), "peak": D("1.0"), "flat": D("0.7"), "valley": D("0.3")},
                      periods=((0, 480, "valley"), (480, 1200, "peak"), (1200, 1440, "flat")))
    fc = project(D("100.00"), D("0"), [MeterOutlook(history("10"), ((datetime(2020, 1, 1, tzinfo=ZONE), tou),))],
                 MONDAY, TZ)
    # 10 kWh spread over the day: 8 h valley 0.3, 12 h peak 1.0, 4 h flat 0.7 → (2.4 + 12 + 2.8) / 24 × 10 = 7.1667
    assert fc.cum_cost[1] == D("7.16666667")
