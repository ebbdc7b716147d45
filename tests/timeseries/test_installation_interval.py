"""Usage follows a meter's installation interval (``installed_at`` .. ``removed_at``, issue 21 item 6) on both
backends: the rollups clip at refresh (plain PostgreSQL), the usage query clips the aggregates' buckets with exact
edges (TimescaleDB, :mod:`meterhub.timeseries.cagg_usage`). Hand-checked numbers for an edge inside an hour, an
edge on a day boundary, a property in another time zone (days regrouped from hours), a removed meter's later
readings and an edge bucket older than the lookback."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import text

from meterhub.db import service_session
from meterhub.timeseries import query

from .factories import make_fleet
from .usage_writer import refresh_usage

SH = ZoneInfo("Asia/Shanghai")
UTC = timezone.utc
D = Decimal


def _put(s, group_id: int, meter_id: int, rows: list[tuple[datetime, int]]) -> None:
    for ts, kwh in rows:
        s.execute(text("INSERT INTO readings (group_id, meter_id, ts, energy_kwh, quality, source) "
                       "VALUES (:g, :m, :ts, :e, 0, 'poll')"), {"g": group_id, "m": meter_id, "ts": ts, "e": kwh})


def _usage(s, meters: list[int], start: datetime, end: datetime, bucket: str, tz: ZoneInfo) -> dict:
    return {(r.meter_id, r.bucket.astimezone(tz).strftime("%m-%d %H")): r.energy_kwh
            for r in query.usage(s, meters, start, end, bucket)}


def test_usage_inside_the_installation_interval_only(app, group):
    a, b, c, d = make_fleet(app, group, devices=4).meter_ids
    with app.app_context(), service_session() as s:
        # meter b's property keeps UTC days: on TimescaleDB its days are regrouped from the hours
        s.execute(text("UPDATE properties SET timezone = 'UTC' WHERE id = :p"), {"p": group.property2_id})
        s.execute(text("UPDATE meters SET property_id = :p WHERE id = :b"), {"p": group.property2_id, "b": b})
        for meter, tz in ((a, SH), (b, UTC)):
            # installed 10 March 09:30 (inside an hour), removed 20 March 00:00 (a day's and an hour's start)
            _put(s, group.group_id, meter, [
                (datetime(2026, 3, 1, 0, 10, tzinfo=tz), 10), (datetime(2026, 3, 10, 9, tzinfo=tz), 20),
                (datetime(2026, 3, 10, 9, 30, tzinfo=tz), 25), (datetime(2026, 3, 10, 10, 15, tzinfo=tz), 30),
                (datetime(2026, 3, 15, 12, tzinfo=tz), 40), (datetime(2026, 3, 20, tzinfo=tz), 44),
                (datetime(2026, 3, 20, 0, 30, tzinfo=tz), 50), (datetime(2026, 3, 25, tzinfo=tz), 60)])
            s.execute(text("UPDATE meters SET installed_at = :i, removed_at = :r WHERE id = :m"),
                      {"i": datetime(2026, 3, 10, 9, 30, tzinfo=tz), "r": datetime(2026, 3, 20, tzinfo=tz),
                       "m": meter})
        # c: installed late on 1 December after a reading of its past that day, then silent until 12 March
        _put(s, group.group_id, c, [(datetime(2025, 12, 1, 8, tzinfo=SH), 100),
                                    (datetime(2026, 3, 12, 10, tzinfo=SH), 510),
                                    (datetime(2026, 3, 13, 10, tzinfo=SH), 515)])
        s.execute(text("UPDATE meters SET installed_at = :i WHERE id = :m"),
                  {"i": datetime(2025, 12, 1, 23, tzinfo=SH), "m": c})
        # d: a counter with no interval at all (every reading counts)
        _put(s, group.group_id, d, [(datetime(2026, 3, 1, tzinfo=SH), 1), (datetime(2026, 3, 12, tzinfo=SH), 4)])
    with app.app_context():
        refresh_usage([a, b, c, d], datetime(2025, 11, 1, tzinfo=UTC))
    march = (datetime(2026, 3, 1, tzinfo=SH), datetime(2026, 4, 1, tzinfo=SH))
    with app.app_context(), service_session() as s:
        assert _usage(s, [a, c, d], *march, "day", SH) == {
            (a, "03-10 00"): D(5), (a, "03-15 00"): D(10), (a, "03-20 00"): D(4),  # 25 is the baseline
            (c, "03-13 00"): D(5),  # 510 is its first reading installed: no baseline, its 410 counts nowhere
            (d, "03-12 00"): D(3)}
        assert _usage(s, [b], datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC), "day", UTC) == {
            (b, "03-10 00"): D(5), (b, "03-15 00"): D(10), (b, "03-20 00"): D(4)}
        assert _usage(s, [a], datetime(2026, 3, 10, tzinfo=SH), datetime(2026, 3, 21, tzinfo=SH), "hour", SH) == {
            (a, "03-10 10"): D(5), (a, "03-15 12"): D(10), (a, "03-20 00"): D(4)}
        assert _usage(s, [a, b, c], datetime(2026, 1, 1, tzinfo=SH), datetime(2026, 5, 1, tzinfo=SH), "month",
                      SH) == {(a, "03-01 00"): D(19), (b, "03-01 08"): D(19), (c, "03-01 00"): D(5)}
        # a window starting after the removal: nothing, however the old buckets look
        assert _usage(s, [a, b], datetime(2026, 3, 21, tzinfo=SH), datetime(2026, 4, 1, tzinfo=SH), "day", SH) == {}
        # totals as a report's cell would add them
        assert query.total_usage(s, [a], *march, "day")[a]["energy_kwh"] == D(19)
