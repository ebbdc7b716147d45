"""Reading times that cannot be true are refused on every ingest path: never stored, never the meter's latest.

A reading more than ``READING_MAX_FUTURE_MINUTES`` ahead of the clock (9999-12-31), before ``READING_EARLIEST``
(1970-01-01) or before its meter's installation is left out and recorded as a ``time_refused`` health event —
through ``ingest()`` (imports, demo history), the MQTT ingest's ``store_messages`` and the collector's
``StorageSink``.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import text

from meterhub.collector.store import Pending, StorageSink
from meterhub.db import service_engine, service_session
from meterhub.mqtt_ingest.payload import parse
from meterhub.mqtt_ingest.store import GatewayDirectory, store_messages
from meterhub.timeseries.health import detect_offline
from meterhub.timeseries.ingest import Reading, ingest
from meterhub.timeseries.query import latest
from tests.timeseries.factories import make_fleet

FAR_FUTURE = datetime(9999, 12, 31, 23, 59, tzinfo=timezone.utc)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _stored_times(app, meter_id: int) -> list[datetime]:
    with app.app_context(), service_session() as s:
        return list(s.execute(text("SELECT ts FROM readings WHERE meter_id = :m ORDER BY ts"), {"m": meter_id}).scalars())


def _refusals(app, meter_id: int) -> list[dict]:
    with app.app_context(), service_session() as s:
        return list(s.execute(text(
            "SELECT detail FROM health_events WHERE object_type = 'meter' AND object_id = :m AND event = 'time_refused' "
            "ORDER BY id"), {"m": meter_id}).scalars())


def _latest(app, meter_id: int):
    with app.app_context(), service_session() as s:
        return latest(s, [meter_id]).get(meter_id)


def _install(app, meter_id: int, at: datetime) -> None:
    with app.app_context(), service_session() as s:
        s.execute(text("UPDATE meters SET installed_at = :at WHERE id = :m"), {"at": at, "m": meter_id})


def test_ingest_refuses_future_and_ancient_readings(app, group):
    (meter,) = make_fleet(app, group).meter_ids
    now = _now()
    good = now - timedelta(minutes=10)
    batch = [Reading(group.group_id, meter, ts, {"energy_kwh": Decimal(v)})
             for ts, v in ((FAR_FUTURE, "123456.78"), (EPOCH, "1"), (now + timedelta(minutes=30), "2"), (good, "10"))]
    with app.app_context():
        result = ingest(batch, notify=False)
    assert (result.received, result.stored, result.refused, result.duplicates) == (4, 1, 3, 0)
    assert _stored_times(app, meter) == [good]
    row = _latest(app, meter)
    assert row.ts == row.good_ts == good and row.values["energy_kwh"] == Decimal("10")
    reasons = {(d["reason"], d["count"]) for d in _refusals(app, meter)}
    assert reasons == {("future", 2), ("too_old", 1)}


def test_a_meter_fed_only_a_far_future_reading_still_goes_offline(app, group):
    (meter,) = make_fleet(app, group).meter_ids
    now = _now()
    with app.app_context():
        ingest([Reading(group.group_id, meter, now - timedelta(hours=3), {"energy_kwh": Decimal("1")})], notify=False)
        ingest([Reading(group.group_id, meter, FAR_FUTURE, {"energy_kwh": Decimal("2")})], notify=False)
        with service_session() as s:
            detect_offline(s, now, window=timedelta(hours=1))
            status = s.execute(text("SELECT status FROM meters WHERE id = :m"), {"m": meter}).scalar_one()
    assert status == "offline"
    assert _latest(app, meter).ts == now - timedelta(hours=3)


def test_within_the_configured_future_margin_is_accepted(app, group):
    (meter,) = make_fleet(app, group).meter_ids
    soon = _now() + timedelta(minutes=3)
    later = _now() + timedelta(minutes=30)
    with app.app_context():
        assert ingest([Reading(group.group_id, meter, soon, {"energy_kwh": Decimal("1")})], notify=False).stored == 1
        assert ingest([Reading(group.group_id, meter, later, {"energy_kwh": Decimal("2")})], notify=False).refused == 1
    app.config["READING_MAX_FUTURE_MINUTES"] = 60
    with app.app_context():
        assert ingest([Reading(group.group_id, meter, later, {"energy_kwh": Decimal("2")})], notify=False).stored == 1


def test_readings_before_the_meters_installation_are_refused(app, group):
    first, second = make_fleet(app, group, channels=2).meter_ids
    now = _now()
    installed = now - timedelta(days=1)
    _install(app, first, installed)
    _install(app, second, installed)
    before, after = installed - timedelta(hours=5), installed + timedelta(hours=1)
    batch = [Reading(group.group_id, first, before, {"energy_kwh": Decimal("500")}),
             Reading(group.group_id, first, after, {"energy_kwh": Decimal("7")}),
             Reading(group.group_id, second, before, {"energy_kwh": Decimal("900")})]  # only before: nothing moves
    with app.app_context():
        result = ingest(batch, notify=False)
    assert (result.stored, result.refused, result.duplicates, result.unmatched) == (1, 2, 0, 0)
    assert _stored_times(app, first) == [after] and _stored_times(app, second) == []
    assert _latest(app, first).ts == after and _latest(app, second) is None
    for meter in (first, second):
        (event,) = _refusals(app, meter)
        assert event["reason"] == "before_installation" and event["count"] == 1


def test_mqtt_ingest_refuses_bad_times_and_keeps_the_rest(app, group):
    fleet = make_fleet(app, group)
    (meter,) = fleet.meter_ids
    good = _now() - timedelta(minutes=1)
    payload = {"seq": 1, "readings": [
        {"address": "1", "ts": "9999-12-31T23:59:00Z", "values": {"energy_kwh": "123456.78"}},
        {"address": "1", "ts": "1970-01-01T00:00:00Z", "values": {"energy_kwh": "1"}},
        {"address": "1", "ts": good.isoformat(), "values": {"energy_kwh": "42.5"}},
    ]}
    message = parse(f"meterhub/{fleet.client_id}/readings", json.dumps(payload).encode())
    with app.app_context():
        engine = service_engine()
        outcome = store_messages(engine, GatewayDirectory(engine), [message])
    assert outcome.stored_messages == 1
    assert (outcome.readings.stored, outcome.readings.refused) == (1, 2)
    assert _stored_times(app, meter) == [good]
    assert _latest(app, meter).values["energy_kwh"] == Decimal("42.5")
    assert {d["reason"] for d in _refusals(app, meter)} == {"future", "too_old"}


def test_collector_store_refuses_bad_times(app, group):
    (meter,) = make_fleet(app, group, framing="modbus-tcp").meter_ids
    good = _now()
    pending = Pending(readings=[Reading(group.group_id, meter, ts, {"energy_kwh": Decimal("3")})
                                for ts in (FAR_FUTURE, EPOCH, good)])
    with app.app_context():
        sink = StorageSink(service_engine())
        sink.write(pending)
    assert sink.stats.readings_stored == 1
    assert _stored_times(app, meter) == [good]
    assert _latest(app, meter).ts == good
