"""The meter-level fast path of the usage report (rollup buckets returned as report rows, no GROUP BY) gives
exactly the rows of the grouped query and of the rollups API path, and falls back when a period holds two
buckets of a meter."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from meterhub.db import service_session
from meterhub.reports import usage
from meterhub.reports.filters import ReportFilter, selected_meters
from tests.reports.test_usage_reports import usage_site  # noqa: F401  (the fixture)
from tests.timeseries.usage_writer import day_at, write_usage

TZ = ZoneInfo("Asia/Shanghai")
D = Decimal


def _filter(site, **kw) -> ReportFilter:
    return ReportFilter(**{"group_id": site.group_id, "start": date(2025, 1, 1), "end": date(2027, 1, 1), **kw})


def _three_ways(s, f: ReportFilter) -> tuple[list, list, list | None]:
    bucket = "day" if f.granularity == "day" else "month"
    meters = selected_meters(s, f)
    fast = usage._series_rows(s, meters, f, bucket)
    return (list(usage._aggregate(s, meters, f, bucket, f.tz)), list(usage._grouped_sql(s, meters, f, bucket)),
            None if fast is None else list(fast))


def _put_daily_rollup(s, group_id, meter_id, day: date, total, sharp=0, peak=0, flat=0, valley=0) -> None:
    """A day bucket written straight into the rollup table (plain PostgreSQL only)."""
    s.execute(text(
        "INSERT INTO usage_daily (group_id, meter_id, bucket, energy_kwh, energy_sharp_kwh, energy_peak_kwh, "
        "energy_flat_kwh, energy_valley_kwh, readings, resets) VALUES (:g, :m, :b, :t, :s, :p, :f, :v, 96, 0)"),
        {"g": group_id, "m": meter_id, "b": datetime.combine(day, datetime.min.time(), TZ), "t": D(str(total)),
         "s": D(str(sharp)), "p": D(str(peak)), "f": D(str(flat)), "v": D(str(valley))})


def _types(rows) -> list[tuple]:
    return [tuple(type(v) for v in r) for r in rows]


@pytest.mark.parametrize("granularity", ["day", "month"])
@pytest.mark.parametrize("timezone", ["Asia/Shanghai", "UTC"])
def test_fast_path_equals_grouped_and_api_paths(app, usage_site, granularity, timezone):
    site = usage_site
    # a water meter too: its total is m³ and its TOU columns are zero
    write_usage(app, [(site.group_id, site.meters[1], day_at(date(2026, 3, 1), TZ) + timedelta(minutes=10),
                       {"water_m3": D("1.25")})])
    with app.app_context(), service_session() as s:
        s.execute(text("UPDATE meters SET utility = 'water' WHERE id = :m"), {"m": site.meters[1]})
        f = _filter(site, granularity=granularity, timezone=timezone)
        api, grouped, fast = _three_ways(s, f)
        assert fast is not None and api
        assert fast == grouped == api
        assert [tuple(map(str, r)) for r in fast] == [tuple(map(str, r)) for r in grouped]  # same scale
        assert _types(fast) == _types(grouped)
        assert list(usage.usage_rows(s, f)) == fast
    water = [r for r in fast if r[5] == "water"]
    assert water and all(r[7:] == (0, 0, 0, 0) for r in water)


@pytest.mark.plain_postgres  # a second day bucket at noon cannot come from readings: written by hand
def test_two_buckets_of_a_meter_in_one_period_fall_back_to_the_sums(app, usage_site):
    site = usage_site
    with app.app_context(), service_session() as s:
        # a second bucket on 2026-03-01 (noon): the day's row is the sum of both buckets
        s.execute(text(
            "INSERT INTO usage_daily (group_id, meter_id, bucket, energy_kwh, energy_sharp_kwh, energy_peak_kwh, "
            "energy_flat_kwh, energy_valley_kwh, readings, resets) VALUES (:g, :m, :b, 1.5, 0, 0.5, 1, 0, 4, 0)"),
            {"g": site.group_id, "m": site.meters[0], "b": datetime(2026, 3, 1, 12, tzinfo=TZ)})
        f = _filter(site, start=date(2026, 3, 1), end=date(2026, 4, 1))
        api, grouped, fast = _three_ways(s, f)
        assert fast is None
        rows = list(usage.usage_rows(s, f))
    assert rows == grouped == api
    first = rows[0]
    assert first[0] == "2026-03-01" and first[6:] == (D("11.5"), D(1), D("3.5"), D(5), D(2))


@pytest.mark.plain_postgres  # rewrites rollup rows by hand (the paths' equality on TimescaleDB: the tests above)
@pytest.mark.parametrize("level", ["room", "building", "property"])
@pytest.mark.parametrize("same_buckets", [True, False])
def test_level_rows_from_the_series_equal_the_grouped_sums(app, group, usage_site, level, same_buckets):
    """Above meter level the series of a room's (building's, property's) meters are added bucket by bucket: in C
    when they share their buckets, by bucket otherwise; a water meter and a meter of another room stay apart."""
    from tests.alarms.helpers import make_site

    site = usage_site
    other = make_site(app, group, n=1, account=False, second_room=True)
    with app.app_context(), service_session() as s:
        if same_buckets:  # the second meter gets the first one's days: one shared bucket list
            s.execute(text("DELETE FROM usage_daily WHERE meter_id = :m"), {"m": site.meters[1]})
            for day in (date(2026, 3, 1), date(2026, 3, 2), date(2026, 2, 10), date(2025, 3, 15)):
                _put_daily_rollup(s, site.group_id, site.meters[1], day, "2.125", "0.125", 1, 1, 0)
        _put_daily_rollup(s, site.group_id, other.meters[0], date(2026, 3, 1), 7, 1, 2, 3, 1)
        water = make_site(app, group, n=1, utility="water", account=False)
        s.execute(text("INSERT INTO usage_daily (group_id, meter_id, bucket, water_m3, readings, resets) VALUES "
                       "(:g, :m, :b, 1.25, 96, 0)"), {"g": site.group_id, "m": water.meters[0],
                                                      "b": datetime(2026, 3, 1, tzinfo=TZ)})
        f = _filter(site, level=level)
        assert usage._from_series(selected_meters(s, f), f, "day") == (level == "room")
        meters = selected_meters(s, f)
        series = usage.query.usage_series(s, [m.id for m in meters], f.start_at(), f.end_at(), "day",
                                          usage.SERIES_COLUMNS, missing=usage.ZERO)
        shared = len({id(x.buckets) for x in series if x.meter_id in site.meters}) == 1
        assert shared == same_buckets
        api, grouped, fast = _three_ways(s, f)
        assert fast is not None and len(fast) < len(series[0].buckets) * len(series)
        assert fast == grouped == api
        assert [tuple(map(str, r)) for r in fast] == [tuple(map(str, r)) for r in grouped]  # same scale
        assert _types(fast) == _types(grouped)
        assert list(usage.usage_rows(s, f)) == fast
    march_first = [r for r in fast if r[0] == "2026-03-01" and r[5] == "electricity"]
    expected = {"room": [D(10) + (D("2.125") if same_buckets else D(5)), D(7)],
                "building": [D(10) + (D("2.125") if same_buckets else D(5)), D(7)],
                "property": [D(10) + (D("2.125") if same_buckets else D(5)), D(7)]}[level]
    assert sorted(r[6] for r in march_first) == sorted(expected)
