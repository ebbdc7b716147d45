"""The TimescaleDB path on a real server: schema, conversion of a plain database with its readings, usage equal
to the rollups, and the watch of TimescaleDB's policies (a failing one is seen and its work done)."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from meterhub.app import create_app
from meterhub.db import dispose_service_engines, service_engine, service_session
from meterhub.extensions import db
from meterhub.timeseries import freshness, policies, query
from meterhub.timeseries.ingest import Reading, ingest
from meterhub.timeseries.rollups import refresh_rollups
from meterhub.timeseries.timescale import CAGGS, SWITCH_ENV

from .factories import make_fleet

pytestmark = pytest.mark.timescaledb
MIGRATIONS = str(Path(__file__).resolve().parents[2] / "meterhub" / "migrations")
EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


def test_readings_is_a_compressed_hypertable_with_aggregates(app):
    with app.app_context(), service_session() as s:
        segment, order = s.execute(text(
            "SELECT string_agg(attname, ',') FILTER (WHERE segmentby_column_index IS NOT NULL), "
            "string_agg(attname || CASE WHEN orderby_asc THEN ' ASC' ELSE ' DESC' END, ',') "
            "FILTER (WHERE orderby_column_index IS NOT NULL) "
            "FROM timescaledb_information.compression_settings WHERE hypertable_name = 'readings'")).one()
        assert (segment, order) == ("meter_id", "ts DESC")
        rls = s.execute(text("SELECT relrowsecurity FROM pg_class WHERE relname = 'readings'")).scalar()
        assert rls is False  # TimescaleDB refuses compression with it; the app reads tenant_readings
        procs = set(s.execute(text("SELECT proc_name || ':' || hypertable_name FROM timescaledb_information.jobs "
                                   "WHERE hypertable_name IS NOT NULL")).scalars())
        assert procs >= {"policy_compression:readings", *(f"policy_refresh_continuous_aggregate:{c}"
                                                           for c in CAGGS.values())}
        day = s.execute(text("SELECT view_definition FROM timescaledb_information.continuous_aggregates "
                             "WHERE view_name = :v"), {"v": CAGGS["day"]}).scalar()
        assert "Asia/Shanghai" in day and "meterhub_span_merge" in day


def _second_app(service_urls, name: str):
    url = make_url(service_urls["postgres"]).set(database=name).render_as_string(hide_password=False)
    from tests.conftest import _config

    return create_app(_config(url, service_urls)), url


def _drop(service_urls, name: str) -> None:
    dispose_service_engines()
    admin = create_engine(make_url(service_urls["postgres"]).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"), {"d": name})
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def test_a_plain_database_becomes_timescale_with_its_readings(service_urls, monkeypatch):
    """Made on plain PostgreSQL (METERHUB_TIMESCALEDB=off), with readings and rollups; then `db upgrade` on a
    server with the extension converts readings with every row, and the aggregates give the rollups' numbers."""
    from flask_migrate import upgrade

    from tests.conftest import Tenant

    name = f"meterhub_test_conv_{uuid.uuid4().hex[:8]}"
    app, _ = _second_app(service_urls, name)
    try:
        monkeypatch.setenv(SWITCH_ENV, "off")
        with app.app_context():
            upgrade(directory=MIGRATIONS)
            db.engine.dispose()
            assert not query.uses_timescale(db.session)
        tenant = Tenant(app, "c")
        meters = make_fleet(app, tenant, devices=3).meter_ids
        t0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
        readings = [Reading(tenant.group_id, m, t0 + timedelta(minutes=15 * i),
                            {"energy_kwh": Decimal(i * (k + 1)) / 4 + (100 if i < 200 else 0)})  # a reset at 200
                    for k, m in enumerate(meters) for i in range(400)]
        with app.app_context():
            assert ingest(readings).stored == 1200
            with service_session() as s:
                refresh_rollups(s, EPOCH)
                before = [tuple(r) for r in query.usage(s, meters, t0, t0 + timedelta(days=10), "hour")]
                days_before = [tuple(r) for r in query.usage(s, meters, t0, t0 + timedelta(days=10), "day")]
        monkeypatch.delenv(SWITCH_ENV)
        query._backend_cache.clear()
        with app.app_context():
            upgrade(directory=MIGRATIONS)  # the server has TimescaleDB now: readings becomes the hypertable
            db.engine.dispose()
            with service_session() as s:
                assert query.uses_timescale(s)
                assert s.execute(text("SELECT count(*) FROM readings")).scalar() == 1200
                assert s.execute(text("SELECT num_chunks FROM timescaledb_information.hypertables "
                                      "WHERE hypertable_name = 'readings'")).scalar() >= 1
                after = [tuple(r) for r in query.usage(s, meters, t0, t0 + timedelta(days=10), "hour")]
                days_after = [tuple(r) for r in query.usage(s, meters, t0, t0 + timedelta(days=10), "day")]
        assert len(before) > 250 and after == before
        assert days_after == days_before and any(r[-1] for r in days_after)  # resets counted alike
    finally:
        query._backend_cache.clear()
        _drop(service_urls, name)


def _stats(conn, job_id: int) -> tuple[str | None, int]:
    """(last status, finished runs) of the job; a run in progress does not count yet."""
    status, runs, state = conn.execute(text(
        "SELECT last_run_status, total_runs, job_status FROM timescaledb_information.job_stats WHERE job_id = :j"),
        {"j": job_id}).one()
    return status, (runs or 0) - (1 if state == "Running" or status is None else 0)


def _run_in_background(admin, job_id: int, status: str) -> None:
    """Let TimescaleDB's scheduler run the job now and wait for its outcome."""
    with admin.connect() as conn:
        runs = _stats(conn, job_id)[1] or 0
        conn.execute(text("SELECT alter_job(:j, next_start => now())"), {"j": job_id})
        conn.commit()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            last, total = _stats(conn, job_id)
            conn.commit()
            if (total or 0) > runs:
                assert last == status
                conn.execute(text("SELECT alter_job(:j, next_start => now() + interval '1 day')"), {"j": job_id})
                conn.commit()
                return
            time.sleep(0.5)
    raise AssertionError(f"TimescaleDB did not run job {job_id} within 60 s")


def _hour_usage(app, meter: int, now: datetime) -> tuple[Decimal, int]:
    with app.app_context(), service_session() as s:
        (row,) = query.usage(s, [meter], now - timedelta(hours=6), now, "hour")
    return row.energy_kwh, row.resets


def test_a_failing_policy_is_seen_and_its_work_done_until_it_succeeds(app, database_url, group):
    (meter,) = make_fleet(app, group).meter_ids
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    admin = create_engine(database_url)
    with admin.connect() as conn:
        job = conn.execute(text("SELECT job_id FROM timescaledb_information.jobs WHERE hypertable_name = :c"),
                           {"c": CAGGS["hour"]}).scalar_one()
        step = conn.execute(text("SELECT pg_get_functiondef('meterhub_span_step'::regproc)")).scalar_one()
    with app.app_context():
        ingest([Reading(group.group_id, meter, now - timedelta(hours=5, minutes=m), {"energy_kwh": Decimal(v)})
                for m, v in ((40, 10), (20, 30))])
        with service_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            freshness.refresh_aggregates(conn, EPOCH, force=True)  # materialized up to now
    assert _hour_usage(app, meter, now) == (Decimal(20), 0)
    try:
        with admin.begin() as conn:  # the refresh policy fails from now on
            conn.execute(text("CREATE OR REPLACE FUNCTION meterhub_span_step(s meterhub_span, v numeric) "
                              "RETURNS meterhub_span LANGUAGE plpgsql AS $$ BEGIN RAISE 'broken on purpose'; END $$"))
        with app.app_context(), service_session() as s:  # a late reading (a drop: a reset), behind ingest's back
            s.execute(text("INSERT INTO readings (group_id, meter_id, ts, energy_kwh) VALUES (:g, :m, :t, 5)"),
                      {"g": group.group_id, "m": meter, "t": now - timedelta(hours=5, minutes=30)})
        _run_in_background(admin, job, "Failed")
    finally:
        with admin.begin() as conn:
            conn.execute(text(step))
    assert _hour_usage(app, meter, now) == (Decimal(20), 0)  # stale: the policy failed
    with app.app_context():
        engine = service_engine()
        failing = policies.watch_policies(engine, now)
        # (other policies of the test database may fail too, e.g. when the server runs out of background workers)
        assert job in [p.job_id for p in failing] and all(p.error for p in failing)
        assert _hour_usage(app, meter, now) == (Decimal(25), 1)  # the scheduler refreshed: 10 -> 5 -> 30
        policies.watch_policies(engine, now)  # still failing in TimescaleDB's eyes: no second event
        with service_session() as s:
            events = s.execute(text("SELECT event, detail->>'relation' FROM health_events WHERE group_id = :g "
                                    "AND object_type = :t"), {"g": group.group_id, "t": policies.OBJECT_TYPE}).all()
    assert events.count((policies.FAILED, CAGGS["hour"])) == 1
    _run_in_background(admin, job, "Success")
    with app.app_context():
        assert job not in [p.job_id for p in policies.watch_policies(service_engine(), now)]
        with service_session() as s:
            events = s.execute(text("SELECT event FROM health_events WHERE group_id = :g AND object_type = :t "
                                    "AND object_id = :j ORDER BY id"),
                               {"g": group.group_id, "t": policies.OBJECT_TYPE, "j": job}).scalars().all()
    assert events == [policies.FAILED, policies.RECOVERED]
    admin.dispose()


def test_late_readings_across_a_day_boundary_are_fresh(app, group):
    """Everything materialized, then two late readings either side of local midnight: the hour, day and
    month buckets of both are right at once (not only the day of the first)."""
    from zoneinfo import ZoneInfo

    sh = ZoneInfo("Asia/Shanghai")
    meter, march = make_fleet(app, group, devices=2, utility="water").meter_ids
    with app.app_context():
        with service_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            freshness.refresh_aggregates(conn, EPOCH, force=True)
        ingest([Reading(group.group_id, meter, datetime(2025, 5, 31, 23, 30, tzinfo=sh), {"water_m3": Decimal(1)}),
                Reading(group.group_id, meter, datetime(2025, 6, 1, 0, 10, tzinfo=sh), {"water_m3": Decimal(3)}),
                Reading(group.group_id, meter, datetime(2025, 6, 1, 0, 30, tzinfo=sh), {"water_m3": Decimal(4)})])
        # March in Shanghai begins on 28 February in UTC: one month later is not 28 March
        ingest([Reading(group.group_id, march, datetime(2025, 3, 15, 12, m, tzinfo=sh), {"water_m3": Decimal(m)})
                for m in (0, 30)])
        with service_session() as s:
            got = {b: [(r.bucket.astimezone(sh).replace(tzinfo=None), r.water_m3) for r in query.usage(
                       s, [march, meter], datetime(2025, 1, 1, tzinfo=sh), datetime(2026, 1, 1, tzinfo=sh), b)]
                   for b in ("hour", "day", "month")}
    # (ordered by meter: ``meter`` first)
    assert got == {"hour": [(datetime(2025, 6, 1, 0), Decimal(3)), (datetime(2025, 3, 15, 12), Decimal(30))],
                   "day": [(datetime(2025, 6, 1), Decimal(3)), (datetime(2025, 3, 15), Decimal(30))],
                   "month": [(datetime(2025, 6, 1), Decimal(3)), (datetime(2025, 3, 1), Decimal(30))]}


def test_the_cli_shows_the_policies(runner):
    result = runner.invoke(args=["timeseries-jobs", "--watch"])
    assert result.exit_code == 0, result.output
    assert "watch round done" in result.output
    assert "policy_compression" in result.output and CAGGS["month"] in result.output


def test_retention_follows_the_setting_at_each_upgrade(app, database_url, monkeypatch):
    from meterhub.timeseries.tenant_views import ensure_timescale
    from meterhub.timeseries.timescale import RETENTION_ENV

    def drop_after():
        with create_engine(database_url).connect() as conn:
            return conn.execute(text("SELECT config->>'drop_after' FROM timescaledb_information.jobs "
                                     "WHERE proc_name = 'policy_retention' AND hypertable_name = 'readings'")).scalar()

    engine = create_engine(database_url)
    try:
        monkeypatch.setenv(RETENTION_ENV, "400")
        ensure_timescale(engine)
        assert drop_after() == "400 days"
        monkeypatch.setenv(RETENTION_ENV, "2")  # shorter than the hourly aggregate's refresh window
        with pytest.raises(ValueError, match="at least 4 days"):
            ensure_timescale(engine)
        monkeypatch.setenv(RETENTION_ENV, "0")
        ensure_timescale(engine)
        assert drop_after() is None
    finally:
        engine.dispose()
