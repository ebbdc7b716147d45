"""The TimescaleDB query shape of ``query.usage`` / ``usage_series`` (continuous aggregates: bucket-end
counters, usage = clipped difference) run against stand-in tables of the aggregates' columns, since the
extension is not installed everywhere: checked by hand, and the report built on it equals the API path."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import text

from meterhub.db import service_session
from meterhub.reports import usage as report
from meterhub.reports.filters import ReportFilter, selected_meters
from meterhub.timeseries import query
from meterhub.timeseries.columns import COUNTERS
from meterhub.timeseries.timescale import CAGGS

from .factories import make_fleet

SH = ZoneInfo("Asia/Shanghai")
D = Decimal
DAY0 = datetime(2026, 3, 1, tzinfo=SH)


def _day(n: int) -> datetime:
    return DAY0 + timedelta(days=n)


def _stand_in_caggs(s) -> None:
    cols = ", ".join(f"{c} numeric" for c in COUNTERS)
    for name in CAGGS.values():
        s.execute(text(f"CREATE TEMP TABLE {name} (meter_id bigint, group_id bigint, bucket timestamptz, {cols}, "
                       "readings bigint) ON COMMIT DROP"))


def _counter(s, meter: int, bucket: datetime, **values) -> None:
    cols = ", ".join(values)
    s.execute(text(f"INSERT INTO {CAGGS['day']} (meter_id, group_id, bucket, readings, {cols}) "
                   f"VALUES (:m, 0, :b, 96, {', '.join(':' + c for c in values)})"), {"m": meter, "b": bucket, **values})


def test_usage_from_bucket_end_counters(app, group, monkeypatch):
    a, w = make_fleet(app, group, devices=2).meter_ids
    monkeypatch.setattr(query, "uses_timescale", lambda session: True)
    with app.app_context(), service_session() as s:
        s.execute(text("UPDATE meters SET utility = 'water' WHERE id = :w"), {"w": w})
        _stand_in_caggs(s)
        _counter(s, a, _day(-1), energy_kwh=D(100), energy_peak_kwh=D(40))  # lookback: the baseline
        _counter(s, a, _day(0), energy_kwh=D("110.5"), energy_peak_kwh=D(44))
        _counter(s, a, _day(1), energy_kwh=D(105), energy_peak_kwh=D(44))  # a drop: reset, no usage
        _counter(s, a, _day(2), energy_kwh=D(120), energy_peak_kwh=D(50))
        _counter(s, w, _day(0), water_m3=D(5))
        _counter(s, w, _day(1), water_m3=D("7.5"))
        rows = query.usage(s, [w, a], _day(0), _day(3), "day")
        f = ReportFilter(group.group_id, date(2026, 3, 1), date(2026, 3, 4))
        meters = selected_meters(s, f)
        fast = list(report._series_rows(s, meters, f, "day"))
        api = list(report._aggregate(s, meters, f, "day", f.tz))
        assert list(report.usage_rows(s, f)) == fast
    got = [(r.meter_id, r.bucket, r.energy_kwh, r.energy_peak_kwh, r.water_m3, r.resets) for r in rows]
    assert got == [
        (a, _day(0), D("10.5"), D(4), None, 0),
        (a, _day(1), D(0), D(0), None, 1),
        (a, _day(2), D(15), D(6), None, 0),
        (w, _day(0), None, None, D(0), 0),  # no earlier counter in the lookback: no usage known
        (w, _day(1), None, None, D("2.5"), 0),
    ]
    assert fast == api and len(fast) == 5
    assert [(r[0], r[5], r[6], r[8]) for r in fast if r[5] == "water"] == [
        ("2026-03-01", "water", D(0), D(0)), ("2026-03-02", "water", D("2.5"), D(0))]
