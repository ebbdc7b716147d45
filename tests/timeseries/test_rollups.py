"""Usage rollups checked by hand: local-time buckets, late readings, counter resets, idempotence."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from meterhub.db import service_session
from meterhub.timeseries.ingest import Reading, ingest
from meterhub.timeseries.query import total_usage, usage, uses_timescale
from meterhub.timeseries.rollups import refresh_rollups, run_rollups
from meterhub.timeseries.timescale import timescale_available

from .factories import make_fleet

SH = ZoneInfo("Asia/Shanghai")  # the test property's time zone (UTC+8)
EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=SH)


def tou(total: str, sharp: str, peak: str, flat: str, valley: str) -> dict[str, Decimal]:
    return {"energy_kwh": Decimal(total), "energy_sharp_kwh": Decimal(sharp), "energy_peak_kwh": Decimal(peak),
            "energy_flat_kwh": Decimal(flat), "energy_valley_kwh": Decimal(valley)}


def _usage(app, meter, bucket, start, end):
    with app.app_context(), service_session() as s:  # either backend: the same numbers
        return {r.bucket.astimezone(SH).replace(tzinfo=None): r for r in usage(s, [meter], start, end, bucket)}


def _refresh(app, since=EPOCH) -> int:
    with app.app_context(), service_session() as s:
        return refresh_rollups(s, since)


def test_hourly_daily_monthly_usage_with_late_reading_and_reset(app, group):
    (meter,) = make_fleet(app, group, framing="modbus-tcp").meter_ids
    g = group.group_id
    with app.app_context():
        ingest([
            Reading(g, meter, local(2026, 3, 10, 9, 0), tou("100", "10", "20", "30", "40")),
            Reading(g, meter, local(2026, 3, 10, 9, 30), tou("101.5", "10", "20", "31.5", "40")),
            Reading(g, meter, local(2026, 3, 10, 10, 15), tou("103", "10", "21.5", "31.5", "40")),
            Reading(g, meter, local(2026, 3, 11, 0, 10), tou("110", "10", "21.5", "31.5", "47")),
            Reading(g, meter, local(2026, 3, 11, 0, 20), {"energy_kwh": Decimal("999")}, quality=2),  # bad: ignored
        ])
    assert _refresh(app) >= 1
    hours = _usage(app, meter, "hour", local(2026, 3, 10), local(2026, 3, 12))
    assert {k: (v.energy_kwh, v.energy_peak_kwh, v.energy_flat_kwh, v.energy_valley_kwh) for k, v in hours.items()} == {
        datetime(2026, 3, 10, 9): (Decimal("1.5"), 0, Decimal("1.5"), 0),  # 09:00 has no baseline
        datetime(2026, 3, 10, 10): (Decimal("1.5"), Decimal("1.5"), 0, 0),
        datetime(2026, 3, 11, 0): (Decimal("7"), 0, 0, Decimal("7")),
    }
    days = _usage(app, meter, "day", local(2026, 3, 1), local(2026, 4, 1))
    assert {k.day: v.energy_kwh for k, v in days.items()} == {10: Decimal("3"), 11: Decimal("7")}

    # A late reading (09:45) splits the 09:30→10:15 delta; a counter reset on the 11th at 01:00.
    late_since = datetime.now(timezone.utc) - timedelta(seconds=1)
    with app.app_context():
        ingest([
            Reading(g, meter, local(2026, 3, 10, 9, 45), {"energy_kwh": Decimal("102")}),
            Reading(g, meter, local(2026, 3, 11, 1, 0), {"energy_kwh": Decimal("2")}),
            Reading(g, meter, local(2026, 3, 11, 2, 0), {"energy_kwh": Decimal("5")}),
        ])
    assert _refresh(app, late_since) >= 1
    assert _refresh(app, late_since) >= 1  # idempotent
    hours = _usage(app, meter, "hour", local(2026, 3, 10), local(2026, 3, 12))
    assert {k: (v.energy_kwh, v.resets) for k, v in hours.items()} == {
        datetime(2026, 3, 10, 9): (Decimal("2"), 0),
        datetime(2026, 3, 10, 10): (Decimal("1"), 0),
        datetime(2026, 3, 11, 0): (Decimal("7"), 0),
        datetime(2026, 3, 11, 1): (Decimal("0"), 1),  # 110 → 2: a reset, never negative usage
        datetime(2026, 3, 11, 2): (Decimal("3"), 0),
    }
    months = _usage(app, meter, "month", local(2026, 1, 1), local(2027, 1, 1))
    assert [(k, v.energy_kwh, v.resets, v.readings) for k, v in months.items()] == [
        (datetime(2026, 3, 1), Decimal("13"), 1, 6)]
    with app.app_context(), service_session() as s:
        totals = total_usage(s, [meter], local(2026, 3, 10), local(2026, 3, 11), "hour")
        count = s.execute(text("SELECT count(*) FROM usage_hourly WHERE meter_id = :m"), {"m": meter}).scalar()
    assert totals[meter]["energy_kwh"] == Decimal("3") and totals[meter]["water_m3"] is None
    assert count == 5


def test_month_buckets_follow_the_property_time_zone(app, group):
    (meter,) = make_fleet(app, group, utility="water").meter_ids
    with app.app_context():
        ingest([Reading(group.group_id, meter, local(2026, 3, 31, 23, 30), {"water_m3": Decimal("10.5")}),
                Reading(group.group_id, meter, local(2026, 4, 1, 0, 30), {"water_m3": Decimal("12.25")})])
        with service_session() as s:
            assert run_rollups(s, datetime.now(timezone.utc)) >= 1
    months = _usage(app, meter, "month", local(2026, 1, 1), local(2027, 1, 1))
    # 2026-04-01 00:30 in Shanghai is still 31 March in UTC: the usage belongs to April all the same.
    assert [(k, v.water_m3, v.energy_kwh) for k, v in months.items()] == [(datetime(2026, 4, 1), Decimal("1.75"), None)]


@pytest.mark.timescaledb
def test_timescaledb_path(app):
    with app.app_context(), service_session() as s:
        assert timescale_available(s.connection())
        assert uses_timescale(s)
        assert s.execute(text("SELECT count(*) FROM timescaledb_information.continuous_aggregates")).scalar() == 3


@pytest.mark.plain_postgres
def test_timeseries_jobs_cli_on_plain_postgres(runner):
    result = runner.invoke(args=["timeseries-jobs", "--watch"])
    assert result.exit_code == 0 and "plain PostgreSQL" in result.output


@pytest.mark.plain_postgres
def test_after_a_bulk_load_rolled_up_in_full_the_job_refreshes_only_what_arrives_next(app, group):
    """Issue 21 item 5: the demo's year of history is rolled up as it is stored; the periodic job then starts
    from there (start_watermark) instead of rolling every reading up again, and later takes only the meters
    that received readings, from the hour of their oldest new one."""
    from meterhub.timeseries.rollups import start_watermark

    first, second = make_fleet(app, group, framing="modbus-tcp", devices=2).meter_ids[:2]
    g = group.group_id
    with app.app_context():
        ingest([Reading(g, m, local(2026, 3, 1) + timedelta(hours=h), {"energy_kwh": Decimal(h)})
                for m in (first, second) for h in range(48)])
        with service_session() as s:
            s.execute(text("DELETE FROM timeseries_state WHERE key = 'rollups'"))  # the job never ran
        with service_session() as s:
            assert start_watermark(s) is True
        with service_session() as s:
            assert start_watermark(s) is False  # never moves an existing watermark
        with service_session() as s:
            assert run_rollups(s, datetime.now(timezone.utc)) == 0  # nothing new since the load
        ingest([Reading(g, first, local(2026, 3, 3, 1), {"energy_kwh": Decimal(50)})], fresh=False)
        with service_session() as s:
            # the touched meter (and whatever else arrived within the job's 15-minute overlap)
            assert run_rollups(s, datetime.now(timezone.utc)) >= 1
    usage = _usage(app, first, "hour", local(2026, 3, 3), local(2026, 3, 3, 2))
    assert usage[datetime(2026, 3, 3, 1)].energy_kwh == Decimal(3)  # 47 → 50
