"""The TimescaleDB query shape of ``query.usage`` / ``usage_series`` (continuous aggregates: per bucket the span
of each counter; usage = the rise inside it plus the step from the last value known before), run against
stand-in tables of the aggregates' views, so that it runs on either backend: checked by hand, and the report
built on it equals the API path."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import text

from meterhub.db import service_session
from meterhub.reports import usage as report
from meterhub.reports.filters import ReportFilter, selected_meters
from meterhub.timeseries import query
from meterhub.timeseries.cagg_usage import VIEWS
from meterhub.timeseries.columns import COUNTERS

from .factories import make_fleet

SH = ZoneInfo("Asia/Shanghai")
D = Decimal
DAY0 = datetime(2026, 3, 1, tzinfo=SH)
UTC0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def _day(n: int) -> datetime:
    return DAY0 + timedelta(days=n)


def _stand_in_views(s) -> None:
    """Temporary tables named like the aggregates' views (the temporary schema is searched first)."""
    cols = ", ".join(f"{c} meterhub_span" for c in COUNTERS)
    for name in VIEWS.values():
        s.execute(text(f"CREATE TEMP TABLE {name} (meter_id bigint, group_id bigint, bucket timestamptz, {cols}, "
                       "readings bigint) ON COMMIT DROP"))


def _span(s, bucket: str, meter: int, at: datetime, readings: int, **spans: tuple) -> None:
    """One aggregate row: ``spans`` maps a counter to (first, last, rise, resets, values)."""
    cols = ", ".join(spans)
    values = ", ".join(f"CAST(ROW(:{c}_0, :{c}_1, :{c}_2, :{c}_3, :{c}_4) AS meterhub_span)" for c in spans)
    params = {f"{c}_{i}": v for c, span in spans.items() for i, v in enumerate(span)}
    s.execute(text(f"INSERT INTO {VIEWS[bucket]} (meter_id, group_id, bucket, readings, {cols}) "
                   f"VALUES (:m, 0, :b, :n, {values})"), {"m": meter, "b": at, "n": readings, **params})


def test_usage_from_counter_spans(app, group, monkeypatch):
    a, w, u, g = make_fleet(app, group, devices=4).meter_ids
    monkeypatch.setattr(query, "uses_timescale", lambda session: True)
    with app.app_context(), service_session() as s:
        s.execute(text("UPDATE meters SET utility = 'water' WHERE id = :w"), {"w": w})
        # meter u is in a property of another time zone: its days come from the hourly rows
        s.execute(text("UPDATE properties SET timezone = 'UTC' WHERE id = :p"), {"p": group.property2_id})
        s.execute(text("UPDATE meters SET property_id = :p WHERE id = :u"), {"p": group.property2_id, "u": u})
        _stand_in_views(s)
        _span(s, "day", a, _day(-1), 1, energy_kwh=(100, 100, 0, 0, 1), energy_peak_kwh=(40, 40, 0, 0, 1))
        _span(s, "day", a, _day(0), 3, energy_kwh=(101, D("110.5"), D("9.5"), 0, 3), energy_peak_kwh=(41, 44, 3, 0, 2))
        _span(s, "day", a, _day(1), 1, energy_kwh=(105, 105, 0, 0, 1))  # a drop: reset, no usage; no peak value
        _span(s, "day", a, _day(2), 2, energy_kwh=(106, 120, 14, 0, 2), energy_peak_kwh=(50, 50, 0, 0, 1))
        _span(s, "day", w, _day(0), 1, water_m3=(5, 5, 0, 0, 1))  # the first reading ever: no usage, no row
        _span(s, "day", w, _day(1), 2, water_m3=(6, D("7.5"), D("1.5"), 0, 2))
        _span(s, "day", g, _day(-100), 1, energy_kwh=(7, 7, 0, 0, 1))  # silent for longer than the lookback
        _span(s, "day", g, _day(2), 2, energy_kwh=(9, D("9.5"), D("0.5"), 0, 2))
        _span(s, "hour", u, UTC0 - timedelta(hours=1), 1, energy_kwh=(50, 50, 0, 0, 1))
        _span(s, "hour", u, UTC0, 2, energy_kwh=(51, 52, 1, 0, 2))
        _span(s, "hour", u, UTC0 + timedelta(hours=5), 2, energy_kwh=(48, 53, 5, 0, 2))  # a reset between hours
        rows = query.usage(s, [w, a, u, g], _day(0), _day(3), "day")
        f = ReportFilter(group.group_id, date(2026, 3, 1), date(2026, 3, 4))
        meters = [m for m in selected_meters(s, f) if m.id in (a, w, g)]
        fast = list(report._series_rows(s, meters, f, "day"))
        api = list(report._aggregate(s, meters, f, "day", f.tz))
        grouped = list(report._grouped_sql(s, meters, f, "day"))
    got = [(r.meter_id, r.bucket, r.energy_kwh, r.energy_peak_kwh, r.water_m3, r.resets, r.readings) for r in rows]
    assert got == [
        (a, _day(0), D("10.5"), D(4), None, 0, 3),
        (a, _day(1), D(0), None, None, 1, 1),
        (a, _day(2), D(15), D(6), None, 0, 2),  # the peak's previous value is two days back
        (w, _day(1), None, None, D("2.5"), 0, 2),
        (u, UTC0, D(7), None, None, 1, 4),  # 1 + 1 within the first hour, 0 for the drop, 5 after it
        (g, _day(2), D("2.5"), None, None, 0, 2),  # from its last value, 100 days back
    ]
    assert fast == api == grouped and len(fast) == 5
    assert [(r[0], r[5], r[6], r[8]) for r in fast if r[5] == "water"] == [("2026-03-02", "water", D("2.5"), D(0))]
