"""``query.usage`` and ``query.usage_series`` (column-wise, streamed with COPY) against the rollup rows read one
by one: same values with the same scale and type, same bucket datetimes, NULL counters, bucket bounds, order,
and row-level security with the web app's role."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import bindparam, text

from meterhub.db import service_session, use_group
from meterhub.extensions import db
from meterhub.timeseries import query
from meterhub.timeseries.columns import COUNTERS

from .factories import make_fleet

# These read rollup rows written by hand; on TimescaleDB usage comes from the aggregates, whose read path is
# checked by test_usage_cagg_shape, test_rollups and the report equality tests (on both backends).
pytestmark = pytest.mark.plain_postgres

SH = ZoneInfo("Asia/Shanghai")
D = Decimal
START = datetime(2026, 3, 1, tzinfo=SH)


def _day(n: int) -> datetime:
    return START + timedelta(days=n)


def _put(s, group_id: int, meter: int, bucket: datetime, readings: int = 96, resets: int = 0, **values) -> None:
    cols = ", ".join(values)
    s.execute(text(f"INSERT INTO usage_daily (group_id, meter_id, bucket, readings, resets{', ' if values else ''}"
                   f"{cols}) VALUES (:g, :m, :b, :r, :x{', ' if values else ''}{', '.join(':' + c for c in values)})"),
              {"g": group_id, "m": meter, "b": bucket, "r": readings, "x": resets, **values})


def _reference(s, meter_ids, start, end, bucket="day") -> list[tuple]:
    """The rollup rows one by one, as psycopg2 returns them (what ``query.usage`` returned before)."""
    cols = ", ".join(f"u.{c}" for c in COUNTERS)
    stmt = text(f"SELECT u.meter_id, u.bucket, {cols}, u.readings, u.resets FROM {query.BUCKETS[bucket]} u "
                "WHERE u.meter_id IN :ids AND u.bucket >= :start AND u.bucket < :end ORDER BY u.meter_id, u.bucket"
                ).bindparams(bindparam("ids", expanding=True))
    return [tuple(r) for r in s.execute(stmt, {"ids": list(meter_ids), "start": start, "end": end})]


def _reprs(rows) -> list[tuple[str, ...]]:
    return [tuple(map(repr, r)) for r in rows]


@pytest.fixture()
def fleet(app, group):
    """Four meters: full TOU with varied scales, an export counter present on some days only, a water meter,
    and a meter without buckets."""
    a, b, w, empty = make_fleet(app, group, devices=4).meter_ids
    with app.app_context(), service_session() as s:
        s.execute(text("UPDATE meters SET utility = 'water' WHERE id = :w"), {"w": w})
        for n in range(5):
            _put(s, group.group_id, a, _day(n), energy_kwh=D(f"{10 + n}.125"), energy_sharp_kwh=D("0"),
                 energy_peak_kwh=D("3.5"), energy_flat_kwh=D(f"{n}.625"), energy_valley_kwh=D("6.0001"))
        for n in (1, 2, 4):
            _put(s, group.group_id, b, _day(n), resets=n % 2, energy_kwh=D("123456.7891"),
                 energy_export_kwh=D("2.5") if n != 2 else None)
        for n in range(3):
            _put(s, group.group_id, w, _day(n), readings=4, water_m3=D("1.25") * n)
        _put(s, group.group_id, a, _day(-1), energy_kwh=D(1))  # before the range
        _put(s, group.group_id, a, _day(5), energy_kwh=D(1))  # at its end: excluded
    return group, (a, b, w, empty)


def test_usage_equals_the_rows_read_one_by_one(app, fleet):
    group, (a, b, w, empty) = fleet
    with app.app_context(), service_session() as s:
        ids = [empty, w, b, a]  # any order in, meter id order out
        got = query.usage(s, ids, START, _day(5), "day")
        ref = _reference(s, ids, START, _day(5))
    assert len(got) == 5 + 3 + 3
    assert _reprs(got) == _reprs(ref)  # values, their scale (Decimal('10.1250')), None, ints, tz of datetimes
    assert all(isinstance(r, query.UsageRow) for r in got)
    first = got[0]
    assert (first.meter_id, first.bucket, first.energy_kwh, first.energy_sharp_kwh, first.water_m3) == (
        a, START, D("10.125"), D(0), None)
    water = [r for r in got if r.meter_id == w]
    assert [r.water_m3 for r in water] == [D(0), D("1.25"), D("2.5")] and {r.energy_kwh for r in water} == {None}
    assert [r.energy_export_kwh for r in got if r.meter_id == b] == [D("2.5"), None, D("2.5")]
    assert [r.resets for r in got if r.meter_id == b] == [1, 0, 0]


def test_usage_series_columns_missing_values_and_shared_buckets(app, fleet):
    group, (a, b, w, empty) = fleet
    with app.app_context(), service_session() as s:
        series = query.usage_series(s, [a, b, w, empty], START, _day(5), "day",
                                    ("energy_kwh", "energy_export_kwh", "water_m3"), missing=D(0))
        again = query.usage_series(s, [w], START, _day(3), "day")
        assert query.usage_series(s, [], START, _day(5), "day") == []
        with pytest.raises(ValueError):
            query.usage_series(s, [a], START, _day(5), "day", ("energy_kwh", "power_kw"))
        with pytest.raises(ValueError):
            query.usage_series(s, [a], START, _day(5), "week")
    assert [x.meter_id for x in series] == sorted([a, b, w])  # a meter without buckets is left out
    by = {x.meter_id: x for x in series}
    assert by[a].buckets == tuple(int(_day(n).timestamp()) for n in range(5))
    assert by[b].buckets == tuple(int(_day(n).timestamp()) for n in (1, 2, 4))
    assert set(by[a].values) == {"energy_kwh", "energy_export_kwh", "water_m3"}
    assert by[a].values["energy_kwh"] == [D("10.125"), D("11.125"), D("12.125"), D("13.125"), D("14.125")]
    assert by[a].values["water_m3"] == [D(0)] * 5  # NULL throughout: the missing value
    assert by[b].values["energy_export_kwh"] == [D("2.5"), D(0), D("2.5")]  # NULL on one day only
    assert by[w].values["water_m3"] == [D(0), D("1.25"), D("2.5")]
    (water,) = again
    assert water.values["readings"] == [4, 4, 4] and water.values["energy_kwh"] == [None, None, None]
    assert by[w].buckets == water.buckets


def test_meters_with_the_same_buckets_share_one_tuple(app, group):
    meters = make_fleet(app, group, devices=3).meter_ids
    with app.app_context(), service_session() as s:
        for m in meters:
            for n in range(3):
                _put(s, group.group_id, m, _day(n), energy_kwh=D(m + n))
        series = query.usage_series(s, meters, START, _day(3), "day")
    assert len(series) == 3 and len({id(x.buckets) for x in series}) == 1


def test_row_level_security_applies_with_the_app_role(app, fleet, other_group):
    group, (a, b, w, empty) = fleet
    (other,) = make_fleet(app, other_group).meter_ids
    with app.app_context(), service_session() as s:
        _put(s, other_group.group_id, other, _day(1), energy_kwh=D(7))
    with app.app_context():
        use_group(group.group_id)
        rows = query.usage(db.session, [a, other], START, _day(5), "day")
        db.session.rollback()
        use_group(None)
    assert {r.meter_id for r in rows} == {a}
