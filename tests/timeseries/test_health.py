"""Offline detection, recovery, health events, fault counters and last-seen times."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import text

from meterhub.db import service_session
from meterhub.timeseries.health import detect_offline, record_fault, record_seen, reset_faults
from meterhub.timeseries.ingest import Reading, ingest

from .factories import make_fleet


def _status(s, table, ids):
    return dict(s.execute(text(f"SELECT id, status FROM {table} WHERE id = ANY(:i)"), {"i": list(ids)}).all())


def test_offline_then_recovery_with_events(app, group):
    fleet = make_fleet(app, group, devices=2, channels=1)
    m1, m2 = fleet.meter_ids
    # The tenant has a gateway, device and meter of its own too: look at this fleet's objects only.
    mine = {("meter", m) for m in fleet.meter_ids} | {("device", d) for d in fleet.device_ids} | {
        ("gateway", fleet.gateway_id)}
    now = datetime.now(timezone.utc)
    with app.app_context():
        ingest([Reading(group.group_id, m1, now - timedelta(minutes=10), {"energy_kwh": Decimal(1)}),
                Reading(group.group_id, m2, now - timedelta(minutes=100), {"energy_kwh": Decimal(1)}),
                Reading(group.group_id, m2, now - timedelta(minutes=5), {"energy_kwh": Decimal(1)}, quality=2)])
        with service_session() as s:  # interval 30 min → window 90 min; m2's newest reading is bad
            events = {(t.object_type, t.object_id, t.event) for t in detect_offline(s, now)
                      if (t.object_type, t.object_id) in mine}
            assert events == {("meter", m1, "online"), ("meter", m2, "offline"),
                              ("device", fleet.device_ids[0], "online"), ("device", fleet.device_ids[1], "offline"),
                              ("gateway", fleet.gateway_id, "online")}
            assert _status(s, "meters", [m1, m2]) == {m1: "online", m2: "offline"}
            assert [t for t in detect_offline(s, now) if t.group_id == group.group_id] == []  # no change, no event
            # A configured window of 2 hours brings m2 back; a later check without readings takes m1 down.
            back = detect_offline(s, now, window=timedelta(hours=2))
            assert ("meter", m2, "online") in {(t.object_type, t.object_id, t.event) for t in back}
            later = detect_offline(s, now + timedelta(hours=3))
            assert {(t.object_type, t.object_id, t.event) for t in later if (t.object_type, t.object_id) in mine} >= {
                ("meter", m1, "offline"), ("meter", m2, "offline"), ("gateway", fleet.gateway_id, "offline")}
            rows = [(kind, event) for kind, oid, event in s.execute(text(
                "SELECT object_type, object_id, event FROM health_events WHERE group_id = :g ORDER BY id"),
                {"g": group.group_id}) if (kind, oid) in mine]
            seen = s.execute(text("SELECT last_seen_at FROM meters WHERE id = :m"), {"m": m1}).scalar()
    assert len(rows) == 5 + 2 + 5, rows
    assert seen == now - timedelta(minutes=10)


def test_fault_counters_and_last_seen(app, group):
    fleet = make_fleet(app, group, framing="modbus-tcp")
    at = datetime(2026, 5, 1, tzinfo=timezone.utc)
    with app.app_context(), service_session() as s:
        record_fault(s, gateway_id=fleet.gateway_id, device_id=fleet.device_ids[0])
        record_fault(s, device_id=fleet.device_ids[0], count=2)
        record_seen(s, at, gateway_id=fleet.gateway_id, device_id=fleet.device_ids[0])
        record_seen(s, at - timedelta(hours=1), device_id=fleet.device_ids[0])  # never moves back
        dev = s.execute(text("SELECT fault_count, last_seen_at FROM devices WHERE id = :d"),
                        {"d": fleet.device_ids[0]}).one()
        gw = s.execute(text("SELECT fault_count FROM gateways WHERE id = :g"), {"g": fleet.gateway_id}).scalar()
        reset_faults(s, device_id=fleet.device_ids[0])
        after = s.execute(text("SELECT fault_count FROM devices WHERE id = :d"), {"d": fleet.device_ids[0]}).scalar()
    assert tuple(dev) == (3, at) and gw == 1 and after == 0

