"""The demo is right from its first minutes (issue 16 item 8): the seeded accounts are opened with their first
payment (no arrears alarm, no trip and restore of every meter), live readings of the simulated fleet raise no
purchase-counter mismatch, and the tenant sees no ``0.0000 / ¥0.00`` charge rows, but sees balance, state and
usage on the first screen."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select, text

from meterhub.alarms.sources import run_sources
from meterhub.db import service_session
from meterhub.demo_seed import onboard_fleet, seed_prepaid, seed_tenancy
from meterhub.models import utcnow
from meterhub.modules.prepaid.charging import charge_new_intervals
from meterhub.modules.prepaid.metering import check_purchase_counters
from meterhub.modules.prepaid.models import PrepaidAccount
from meterhub.plugins import driver_registry
from meterhub.portal import dashboard
from meterhub.simulator.fleet import Fleet
from meterhub.timeseries.ingest import Reading, ingest
from tests.test_demo_seed import _read_fleet


def _store_live_readings(data: dict, meters: dict) -> int:
    """Read every simulated meter through its driver (what the collector polls) and store the readings."""
    values = asyncio.run(_read_fleet(data))
    now = utcnow()
    readings = [Reading(group_id, meter_id, now, {k: v for k, v in values[key].items()}, source="poll")
                for key, (meter_id, group_id) in meters.items() if key in values]
    return ingest(readings, notify=False).stored


def test_demo_starts_without_false_alarms_or_zero_charges(app):
    fleet = Fleet(driver_registry(), gateways=2, devices=1, drivers=["acrel_adf300", "acrel_dtsd1352"],
                  installed=True)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(fleet.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        data = fleet.onboarding()
        with app.app_context():
            with service_session() as s:
                group = seed_tenancy(s, "demo-right")
                onboard_fleet(s, group, data)
                assert seed_prepaid(s, group) > 0
                meters = {(r.serial, r.channel): (r.id, r.group_id) for r in s.execute(text(
                    "SELECT d.serial, m.channel, m.id, m.group_id FROM meters m JOIN devices d ON d.id = m.device_id "
                    "WHERE m.group_id = :g"), {"g": group.id})}
            for _ in range(2):  # the first live reading is each account's baseline, the second one is charged
                assert _store_live_readings(data, meters) == len(meters)
                time.sleep(1.1)
            with service_session() as s:
                charge_new_intervals(s)
                check_purchase_counters(s, group.id, [m for m, _ in meters.values()])
                run_sources(s, utcnow() + timedelta(seconds=1))
            with service_session() as s:
                kinds = s.execute(text("SELECT kind, count(*) FROM alarms WHERE group_id = :g GROUP BY kind"),
                                  {"g": group.id}).all()
                assert not {k for k, _ in kinds} & {"purchase_mismatch", "arrears"}, kinds
                assert {k for k, _ in kinds} <= {"low_balance_1", "low_balance_2"}, kinds  # the demo's low balances
                trips = s.execute(text("SELECT count(*) FROM commands WHERE group_id = :g AND kind = 'switch'"),
                                  {"g": group.id}).scalar()
                assert trips == 0, "opening with a first payment never trips the meter"
                zero = s.execute(text("SELECT count(*) FROM prepaid_charges WHERE group_id = :g AND usage = 0 "
                                      "AND amount = 0"), {"g": group.id}).scalar()
                assert zero > 0, "the baseline intervals are kept in the charging chain"
                shown, booked = Decimal(0), s.execute(text(
                    "SELECT coalesce(sum(amount), 0) FROM prepaid_charges WHERE group_id = :g"), {"g": group.id}).scalar()
                for account in s.execute(select(PrepaidAccount).where(PrepaidAccount.group_id == group.id)).scalars():
                    summary = dashboard.summary(s, account)  # the portal's charges: one row per day and utility
                    assert all(c.usage != 0 or c.amount != 0 for c in summary.charges), account.number
                    assert len({(c.day, c.utility) for c in summary.charges}) == len(summary.charges)
                    shown += sum((c.amount for c in summary.charges), Decimal(0))
                    assert summary.usage["unit"] == "kWh" and summary.usage["month"] >= summary.usage["today"] >= 0
                assert shown == booked, "the days add up to every interval charged"
    finally:
        asyncio.run_coroutine_threadsafe(fleet.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
