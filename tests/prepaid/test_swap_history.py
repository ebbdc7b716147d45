"""Issue 21 item 6: a meter swap keeps the room's history right, on both backends (plain PostgreSQL: the rollups
count a meter only inside its installation interval; TimescaleDB: the usage queries clip the aggregates' buckets).

The room's month across a swap is the old meter's use until the swap plus the new meter's use after it; the new
meter's past in the store room counts nowhere; its counters and relay are read at installation; its own purchase
counter raises no mismatch."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import select, text

from meterhub.commands.models import Command
from meterhub.db import service_session
from meterhub.devices.models import Device, Meter
from meterhub.modules.prepaid import accounts, cashier
from meterhub.modules.prepaid.metering import check_purchase_counters
from meterhub.modules.prepaid.models import PrepaidAccount
from meterhub.modules.prepaid.swap_history import after_swap
from meterhub.outbox import OutboxJob
from meterhub.portal import dashboard as portal_dashboard
from meterhub.reports.filters import ReportFilter
from meterhub.reports.usage import usage_rows
from meterhub.timeseries import query
from meterhub.timeseries.property_usage import refresh_property

from tests.timeseries.usage_writer import refresh_usage

from .conftest import add_meters

SH = ZoneInfo("Asia/Shanghai")
D = Decimal


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=SH)


def _readings(s, group_id: int, rows: list[tuple]) -> None:
    for meter_id, ts, kwh, count in rows:
        s.execute(text("INSERT INTO readings (group_id, meter_id, ts, energy_kwh, purchase_count, quality, source) "
                       "VALUES (:g, :m, :ts, :e, :c, 0, 'poll')"),
                  {"g": group_id, "m": meter_id, "ts": ts, "e": kwh, "c": count})


def _check_edges_and_dashboards(s, world, old: int, new: int, account_id: int) -> None:
    """The buckets at the swap hold each meter's part only, in every reader: the report's day, the hours, the
    property dashboard's days and top meters, the tenant's usage chart."""
    day = ReportFilter(world.group_id, date(2026, 11, 14), date(2026, 11, 17), room_id=world.room_id,
                       level="room", granularity="day")
    days = {r[0]: r[6] for r in usage_rows(s, day)}
    # the 15th: the old meter's 48 + 2 up to the swap at 12:00; the new one's 200 before it counts nowhere
    assert days.get("2026-11-15") == D(50), days
    hours = {(r.meter_id, r.bucket.astimezone(SH).hour): (r.energy_kwh, r.readings)
             for r in query.usage(s, [old, new], local(2026, 11, 15), local(2026, 11, 16), "hour")}
    assert hours == {(old, 11): (D(48), 1), (old, 12): (D(2), 1)}, hours
    by_day = query.usage(s, [old, new], local(2026, 11, 1), local(2026, 12, 1), "day")
    assert {(r.meter_id, r.bucket.astimezone(SH).day): r.energy_kwh for r in by_day} == {
        (old, 10): D(100), (old, 15): D(50), (new, 30): D(100)}
    # the dashboards: a property's days and the month's top meters (usage_relation), the portal's chart
    refresh_property(s, world.group_id, world.property_id, "Asia/Shanghai", local(2026, 11, 30, 20), days=30)
    property_days = dict(s.execute(text("SELECT day, usage FROM usage_property_daily WHERE property_id = :p "
                                        "AND utility = 'electricity' AND usage <> 0"), {"p": world.property_id}).all())
    assert property_days == {date(2026, 11, 10): D(100), date(2026, 11, 15): D(50), date(2026, 11, 30): D(100)}
    top = s.execute(text("SELECT meter_id, usage FROM usage_top_meters WHERE property_id = :p AND month = :m "
                         "ORDER BY rank"), {"p": world.property_id, "m": date(2026, 11, 1)}).all()
    assert [tuple(t) for t in top] == [(old, D(150)), (new, D(100))]
    chart = portal_dashboard.usage_series(s, s.get(PrepaidAccount, account_id), "month", local(2026, 11, 30, 20))
    assert dict(zip(chart["labels"], chart["values"])) == {"2026-11": 100.0}  # the account's meter now: the new one


def _room_month(s, world, month: date, end: date) -> Decimal:
    f = ReportFilter(world.group_id, month, end, room_id=world.room_id, level="room", granularity="month")
    rows = [r for r in usage_rows(s, f)]
    assert len(rows) == 1, rows
    return rows[0][6]


def test_room_month_across_a_swap_is_old_until_the_swap_plus_new_after(world):
    old = world.meters[0]
    swap_at = local(2026, 11, 15, 12)
    with world.app.app_context(), service_session() as s:
        new = add_meters(s, world.group_id, world.property_id, world.gateway_id, None, 1)[0]  # in the store room
        for m in (old, new):
            s.get(Device, s.get(Meter, m).device_id).config = {"variant": "dtsy1352"}
        _readings(s, world.group_id, [
            (old, local(2026, 11, 1), D(0), None), (old, local(2026, 11, 10), D(100), None),
            (old, local(2026, 11, 15, 11), D(148), None),
            # the new meter's life before: 300 kWh in October and November elsewhere, its own purchase counter 7
            (new, local(2026, 10, 1), D(1000), 7), (new, local(2026, 11, 1), D(1300), 7),
            (new, local(2026, 11, 15, 11), D(1500), 7)])
    with world.app.app_context(), service_session() as s:
        account = accounts.create_account(s, world.group_id, world.property_id, [old], room_id=world.room_id,
                                          customer_name="Swap", actor="t")
        cashier.topup(s, world.group_id, account.id, "500.00", "cash", f"swap-{account.id}", actor="t")
        account_id = account.id
    with world.app.app_context(), service_session() as s:
        accounts.swap_meter(s, world.group_id, old, new, final_reading="150", new_initial_reading="1500",
                            at=swap_at, actor="t")
    with world.app.app_context(), service_session() as s:
        held = s.execute(select(OutboxJob).where(OutboxJob.path.like("%swap_history:after_swap"))
                         .order_by(OutboxJob.id.desc())).scalars().first()
        kwargs = {k: v for k, v in held.kwargs.items() if k != "job_timeout"}
        assert kwargs["new_meter_id"] == new and kwargs["old_meter_id"] == old
        # read at installation: its counters (read now) and its relay (the account is in credit: closed)
        kinds = [(c.kind, c.params) for c in s.execute(select(Command).where(Command.meter_id == new)
                                                       .order_by(Command.id)).scalars()]
        assert ("read_now", {}) in kinds and ("switch", {"closed": True}) in kinds
        meter = s.get(Meter, new)
        assert meter.room_id == world.room_id and meter.installed_at == swap_at
        assert s.get(Meter, old).removed_at == swap_at
    with world.app.app_context():
        assert after_swap(**kwargs) == 2  # the job: both readings at the swap, both meters rolled up again
        with service_session() as s:
            _readings(s, world.group_id, [(new, local(2026, 11, 30), D(1600), 7),
                                          (old, local(2026, 11, 20), D(180), None)])  # the old one, on a shelf
        refresh_usage([old, new], local(2026, 10, 1))
        with service_session() as s:
            # 150 kWh of the old meter until the swap + 100 of the new one after (not its 300 elsewhere)
            assert _room_month(s, world, date(2026, 11, 1), date(2026, 12, 1)) == D("250")
            october = ReportFilter(world.group_id, date(2026, 10, 1), date(2026, 11, 1), room_id=world.room_id,
                                   level="room", granularity="month")
            assert list(usage_rows(s, october)) == []  # the new meter's October was not in this room
            # apportioning and post-paid bills read the same interval from the readings
            from meterhub.modules.apportion.usage import window_usage

            nov = (local(2026, 11, 1), local(2026, 12, 1))
            used = {u.meter_id: u.usage for u in window_usage(s, [(old, *nov), (new, *nov)], "electricity")}
            assert used == {old: D(150), new: D(100)}
            _check_edges_and_dashboards(s, world, old, new, account_id)
            # its purchase counter (7 against our 1) is taken as its baseline: no mismatch from the swap
            assert check_purchase_counters(s, world.group_id, [new]) == []
            assert s.execute(text("SELECT count(*) FROM prepaid_events WHERE account_id = :a AND kind = "
                                  "'purchase_count_mismatch'"), {"a": account_id}).scalar() == 0
