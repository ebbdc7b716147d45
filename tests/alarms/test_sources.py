"""Alarm sources: health events, the prepaid control loop, overload, purchase counter, valve, abnormal usage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select, text

from meterhub.alarms.models import Alarm
from meterhub.alarms.sources import run_sources
from meterhub.db import service_session
from meterhub.ledger import run_money_transaction
from meterhub.models import utcnow
from meterhub.modules.prepaid import cashier
from meterhub.modules.prepaid.control import evaluate_accounts
from tests.alarms.helpers import make_site, set_latest, set_limit
from tests.timeseries.usage_writer import write_usage


def _open(s, group_id, subject: str = ""):
    """Open alarms of the group as kind@subject, without those the Tenant fixture raises on its gateways."""
    rows = s.execute(select(Alarm.kind, Alarm.subject_key).where(
        Alarm.group_id == group_id, Alarm.state != "cleared", Alarm.subject_key.not_in(_fixture_subjects(s, group_id)))
    ).all()
    return sorted(f"{k}@{key}" for k, key in rows if key.startswith(subject))


def _fixture_subjects(s, group_id):
    names = s.execute(text("SELECT 'gateway:' || id FROM gateways WHERE group_id = :g AND name ~ '^GW2? '"),
                      {"g": group_id}).scalars().all()
    return names or ["-"]


def test_health_events_raise_and_clear_offline_and_comm_fault(app, group):
    site = make_site(app, group, account=False)
    m = site.meters[0]
    with app.app_context():
        with service_session() as s:
            s.execute(text("INSERT INTO health_events (group_id, object_type, object_id, event, detail) VALUES "
                           "(:g, 'meter', :m, 'offline', '{}'), (:g, 'gateway', :gw, 'offline', '{}')"),
                      {"g": site.group_id, "m": m, "gw": site.gateway_id})
            s.commit()  # the job reads the events of ended transactions only
            run_sources(s)
            assert _open(s, site.group_id) == [f"comm_fault@gateway:{site.gateway_id}", f"offline@meter:{m}"]
            run_sources(s)  # events are applied once
            assert s.execute(text("SELECT max(occurrences) FROM alarms WHERE group_id = :g"),
                             {"g": site.group_id}).scalar() == 1
        with service_session() as s:
            s.execute(text("INSERT INTO health_events (group_id, object_type, object_id, event, detail) VALUES "
                           "(:g, 'meter', :m, 'online', '{}')"), {"g": site.group_id, "m": m})
            s.commit()
            run_sources(s)
            assert _open(s, site.group_id) == [f"comm_fault@gateway:{site.gateway_id}"]


def test_prepaid_levels_follow_the_control_loop(app, group):
    site = make_site(app, group)
    acc = f"account:{site.account_id}"
    with app.app_context():
        with service_session() as s:
            evaluate_accounts(s, [site.account_id])  # balance 0 → arrears (trip line 0)
            s.commit()
            run_sources(s)
            assert _open(s, site.group_id) == [f"arrears@{acc}"]
        with service_session() as s:
            run_money_transaction(s, lambda s: cashier.topup(s, site.group_id, site.account_id, "10.00", "cash",
                                                             "t1", actor="cashier"))
        with service_session() as s:
            run_sources(s)  # 10 ≤ alarm1 (20) but > alarm2 (5): level 1 only
            assert _open(s, site.group_id) == [f"low_balance_1@{acc}"]
            history = s.execute(select(Alarm.kind, Alarm.state).where(Alarm.subject_key == acc)
                                .order_by(Alarm.id)).all()
            assert [tuple(r) for r in history] == [("arrears", "cleared"), ("low_balance_1", "active")]
        with service_session() as s:
            run_money_transaction(s, lambda s: cashier.topup(s, site.group_id, site.account_id, "100.00", "cash",
                                                             "t2", actor="cashier"))
        with service_session() as s:
            run_sources(s)
            assert _open(s, site.group_id) == []


def test_overload_purchase_counter_and_valve(app, group):
    site = make_site(app, group)
    water = make_site(app, group, n=1, utility="water", account=False).meters[0]
    m1, m2 = site.meters
    now = utcnow()
    with app.app_context():
        with service_session() as s:
            set_limit(s, m1, "5.000")
            set_limit(s, m2, "5.000")
            set_latest(s, site.group_id, m1, now, power_kw=6.2, purchase_count=3)  # account count is 0
            set_latest(s, site.group_id, m2, now, power_kw=4.9)
            set_latest(s, site.group_id, water, now, valve_open=False)
            s.execute(text("UPDATE meters SET relay_desired = true WHERE id = :m"), {"m": water})
            run_sources(s)
            assert _open(s, site.group_id, "meter:") == [f"overload@meter:{m1}", f"purchase_mismatch@meter:{m1}",
                                               f"valve_fault@meter:{water}"]
            detail = s.execute(select(Alarm.detail).where(Alarm.kind == "overload", Alarm.meter_id == m1)).scalar()
            assert detail == {"power_kw": 6.2, "limit_kw": 5.0}
            run_sources(s)  # still bad: the open alarms are not repeated every poll
            assert s.execute(text("SELECT max(occurrences) FROM alarms WHERE group_id = :g"),
                             {"g": site.group_id}).scalar() == 1
        with service_session() as s:
            set_latest(s, site.group_id, m1, now, power_kw=4.0, purchase_count=0)
            set_latest(s, site.group_id, water, now, valve_open=True)
            run_sources(s)
            assert _open(s, site.group_id, "meter:") == []


def test_abnormal_night_usage_against_the_meters_own_baseline(app, group):
    site = make_site(app, group, account=False)
    m1, m2 = site.meters
    now = datetime(2026, 3, 20, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai: after the night
    today = datetime(2026, 3, 20, tzinfo=UTC) - timedelta(hours=8)  # local midnight in UTC
    rows = []
    for night in range(15):
        start = today - timedelta(days=14 - night)
        for hour in range(6):
            last_night = night == 14
            rows.append((m1, start + timedelta(hours=hour), Decimal("2.0") if last_night else Decimal("0.1")))
            rows.append((m2, start + timedelta(hours=hour), Decimal("0.12") if last_night else Decimal("0.1")))
    write_usage(app, [(site.group_id, meter, bucket + timedelta(minutes=30), {"energy_kwh": used})
                      for meter, bucket, used in rows])
    with app.app_context(), service_session() as s:
        s.execute(text("DELETE FROM alarm_watermarks WHERE key LIKE 'abnormal:%'"))
        run_sources(s, now)
        assert _open(s, site.group_id) == [f"abnormal_usage@meter:{m1}"]
        detail = s.execute(select(Alarm.detail).where(Alarm.meter_id == m1)).scalar()
        assert Decimal(detail["usage"]) == 12 and Decimal(detail["baseline"]) == Decimal("0.6") and detail["night"] == "2026-03-20"


def test_reading_older_than_the_last_topup_write_is_not_a_mismatch(app, group):
    from meterhub.commands.service import create_command, transition
    from meterhub.devices.models import Meter

    site = make_site(app, group)
    m1 = site.meters[0]
    now = utcnow()
    with app.app_context():
        with service_session() as s:
            command = create_command(s, s.get(Meter, m1), "write_topup", {"amount": "10.00", "purchase_count": 1})
            transition(s, command, "sent")
            transition(s, command, "confirmed")
            command.done_at = now
            # read one second before the write reached the meter: the meter still shows the old counter
            set_latest(s, site.group_id, m1, now - timedelta(seconds=1), purchase_count=3)
            run_sources(s)
            assert f"purchase_mismatch@meter:{m1}" not in _open(s, site.group_id, "meter:")
        with service_session() as s:
            set_latest(s, site.group_id, m1, now + timedelta(seconds=1), purchase_count=3)
            run_sources(s)
            assert f"purchase_mismatch@meter:{m1}" in _open(s, site.group_id, "meter:")


def test_events_committed_out_of_id_order_are_all_read(app, group, database_url):
    """Two transactions insert events; the one with the lower id commits after a poll: it is still read."""
    from sqlalchemy import create_engine

    site = make_site(app, group, account=False)
    m1, m2 = site.meters[0], site.meters[1]
    insert = text("INSERT INTO health_events (group_id, object_type, object_id, event, detail) VALUES "
                  "(:g, 'meter', :m, 'offline', '{}')")
    engine = create_engine(database_url)
    with engine.connect() as first, engine.connect() as second, app.app_context():
        first.execute(insert, {"g": site.group_id, "m": m1})  # the lower id, still in flight
        second.execute(insert, {"g": site.group_id, "m": m2})
        second.commit()
        with service_session() as s:
            run_sources(s)
            s.commit()
        first.commit()
        with service_session() as s:
            run_sources(s)
            s.commit()
            assert _open(s, site.group_id, "meter:") == [f"offline@meter:{m1}", f"offline@meter:{m2}"]
    engine.dispose()


def test_a_long_transaction_in_another_database_holds_no_alarm_back(app, group, database_url):
    """Transaction ids are server-wide: a writing transaction left open in another database of the same server
    (a long report, another tenant's database, a test suite) must not hold the events of this one back."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    site = make_site(app, group, account=False)
    meter = site.meters[0]
    other = create_engine(make_url(database_url).set(database="postgres"))
    with other.connect() as elsewhere, app.app_context():
        elsewhere.execute(text("SELECT txid_current()"))  # a writing transaction, open until the end
        with service_session() as s:
            s.execute(text("INSERT INTO health_events (group_id, object_type, object_id, event, detail) VALUES "
                           "(:g, 'meter', :m, 'offline', '{}')"), {"g": site.group_id, "m": meter})
        with service_session() as s:
            run_sources(s)
            s.commit()
            assert _open(s, site.group_id, "meter:") == [f"offline@meter:{meter}"]
        elsewhere.rollback()
    other.dispose()
