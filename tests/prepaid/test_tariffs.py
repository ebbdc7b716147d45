"""Tariffs: hand-worked examples, the SQL charging against the pure functions, rounding."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text

from meterhub.db import service_session
from meterhub.errors import ValidationError
from meterhub.ledger.money import booked_increment
from meterhub.modules.prepaid import accounts
from meterhub.modules.prepaid.charging import charge_new_intervals
from meterhub.tariffs import service as tariffs
from meterhub.tariffs.pricing import PlanVersion, price_interval, validate_version

from .conftest import EPOCH, write_readings

D = Decimal
SH = "Asia/Shanghai"
# 14 periods: valley night, two sharp slots, flat before midnight.
PERIODS = ((0, 360, "valley"), (360, 480, "flat"), (480, 600, "peak"), (600, 660, "sharp"), (660, 720, "peak"),
           (720, 840, "flat"), (840, 900, "peak"), (900, 960, "sharp"), (960, 1020, "peak"),
           (1020, 1140, "flat"), (1140, 1260, "peak"), (1260, 1320, "flat"), (1320, 1380, "valley"),
           (1380, 1440, "flat"))
PRICES = {"sharp": D("1.20"), "peak": D("0.90"), "flat": D("0.60"), "valley": D("0.30")}
TOU = PlanVersion("tou", PRICES, PERIODS)
TIERED = PlanVersion("tiered", {r: D("0.50") for r in PRICES}, tiers=((D(200), D("0.05")), (D(400), D("0.30"))))


def sh(*args: int) -> datetime:
    """A Shanghai wall-clock time as UTC."""
    return datetime(*args, tzinfo=UTC) - timedelta(hours=8)


def test_tou_across_midnight():
    validate_version(TOU)
    # 23:30–00:30: half flat (0.60), half valley (0.30); 2 kWh spread evenly.
    p = price_interval(TOU, sh(2026, 3, 1, 23, 30), sh(2026, 3, 2, 0, 30), SH, D(2))
    assert p.cost == D("0.90000000")
    assert p.usage_by_rate["flat"] == D("1.0000") and p.usage_by_rate["valley"] == D("1.0000")
    # 10:50–15:10 covers sharp 10:50-11:00 & 15:00-15:10, peak 11-12 & 14-15, flat 12-14: 260 min, 2.6 kWh.
    p = price_interval(TOU, sh(2026, 3, 1, 10, 50), sh(2026, 3, 1, 15, 10), SH, D("2.6"))
    assert p.cost == D("0.2") * D("1.20") + D("1.2") * D("0.90") + D("1.2") * D("0.60")
    # TOU registers win over the time split.
    p = price_interval(TOU, sh(2026, 3, 1, 23, 30), sh(2026, 3, 2, 0, 30), SH, D(2),
                       usage_by_rate={"sharp": D(0), "peak": D(0), "flat": D("0.5"), "valley": D("1.5")})
    assert p.cost == D("0.75") and p.usage == D(2)


def test_tier_boundary_inside_one_interval():
    t0, t1 = sh(2026, 3, 10, 8), sh(2026, 3, 10, 9)
    assert price_interval(TIERED, t0, t1, SH, D(10), cum_before=D(195)).cost == D("5.25")  # 10×0.50 + 5×0.05
    # across both thresholds: 210×0.50 + 200×0.05 + 5×0.30
    assert price_interval(TIERED, t0, t1, SH, D(210), cum_before=D(195)).cost == D("116.5")
    assert price_interval(TIERED, t0, t1, SH, D(10), cum_before=D(0)).cost == D("5.00")


def test_invalid_versions_rejected():
    with pytest.raises(ValidationError):
        validate_version(PlanVersion("tou", PRICES, PERIODS[:-1]))  # gap at the end of the day
    with pytest.raises(ValidationError):
        validate_version(PlanVersion("tou", PRICES, PERIODS + ((100, 200, "peak"),)))  # overlap
    with pytest.raises(ValidationError):
        validate_version(PlanVersion("flat", {**PRICES, "flat": D("0.1234567")}))
    with pytest.raises(ValidationError):
        validate_version(PlanVersion("tiered", PRICES, tiers=((D(400), D(1)), (D(200), D(1)))))


def test_rounding_rule_never_drifts():
    # 0.01 kWh at 0.333333/kWh per interval: exact 0.00333333 each; booked = diff of rounded running totals.
    total, booked = D(0), []
    for _ in range(300):
        cost = D("0.00333333")
        booked.append(booked_increment(total, cost))
        total += cost
    assert sum(booked) == D("1.00") and set(booked) <= {D("0.00"), D("0.01")}
    assert booked_increment(D("0.004"), D("0.001")) == D("0.01")  # 0.005 rounds half up


def _open(world, meter_id: int, tariff_version: PlanVersion | None = None, *, start=EPOCH) -> int:
    with world.app.app_context(), service_session() as s:
        if tariff_version is not None:
            tariff = tariffs.create_tariff(s, world.group_id, f"T{meter_id}")
            tariffs.add_version(s, tariff, start, tariff_version)
            from meterhub.devices.models import Meter

            tariffs.assign(s, world.group_id, "meter", meter_id, tariff)
            assert tariffs.resolve_tariff(s, s.get(Meter, meter_id)).id == tariff.id  # meter beats property
        write_readings(s, world.group_id, [(meter_id, start, D(0))])
    with world.app.app_context(), service_session() as s:
        return accounts.create_account(s, world.group_id, world.property_id, [meter_id], customer_name="x",
                                       actor="t").id


def test_sql_charging_matches_pure_pricing(world):
    rnd = random.Random(7)
    plan = PlanVersion("tiered_tou", PRICES, PERIODS, tiers=((D(30), D("0.05")), (D(60), D("0.30"))))
    meter = world.meters[0]
    _open(world, meter, plan)
    ts, energy, rows = EPOCH, D(0), []
    for _ in range(40):
        ts += timedelta(minutes=rnd.choice([7, 30, 45, 95, 600]))
        energy += D(rnd.randint(0, 500)) / 100
        rows.append((meter, ts, energy))
    with world.app.app_context(), service_session() as s:
        write_readings(s, world.group_id, rows)
        charge_new_intervals(s, until=ts)
    with world.app.app_context(), service_session() as s:
        charges = s.execute(text("SELECT interval_start, interval_end, usage, cost_exact, amount FROM prepaid_charges "
                                 "WHERE meter_id = :m ORDER BY interval_end"), {"m": meter}).all()
    assert len(charges) == 40
    total, cum, period = D(0), D(0), None
    for (t0, t1, usage, cost, amount) in charges:
        start = (t0 + timedelta(hours=8)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        cum = cum if start == period else D(0)
        period = start
        expected = price_interval(plan, t0, t1, SH, usage, cum_before=cum)
        assert cost == expected.cost, (t0, t1, usage)
        assert amount == booked_increment(total, expected.cost)
        total, cum = total + expected.cost, cum + usage


def test_plan_change_mid_month_and_no_repricing(world):
    meter = world.meters[1]
    account_id = _open(world, meter, PlanVersion("flat", tariffs.flat_prices(D("1.00"))))
    change = sh(2026, 1, 15, 0, 0)
    with world.app.app_context(), service_session() as s:
        write_readings(s, world.group_id, [(meter, change - timedelta(minutes=30), D(10)), (meter, change, D(20))])
        charge_new_intervals(s, until=change)
    with world.app.app_context(), service_session() as s:
        tariff_id = s.execute(text("SELECT tariff_id FROM tariff_assignments WHERE scope = 'meter' AND scope_id = :m"),
                              {"m": meter}).scalar()
        tariffs.add_version(s, s.get(tariffs.Tariff, tariff_id), change, PlanVersion("flat", tariffs.flat_prices(D(2))))
        write_readings(s, world.group_id, [(meter, change + timedelta(minutes=30), D(25))])
        charge_new_intervals(s, until=change + timedelta(hours=1))
        charge_new_intervals(s, until=change + timedelta(hours=1))  # a second run charges nothing new
    with world.app.app_context(), service_session() as s:
        amounts = s.execute(text("SELECT amount FROM prepaid_charges WHERE meter_id = :m ORDER BY interval_end"),
                            {"m": meter}).scalars().all()
        assert amounts == [D("10.00"), D("10.00"), D("10.00")]  # 10 kWh @1, 10 kWh @1 (before), 5 kWh @2
        balance = s.execute(text("SELECT b.balance FROM ledger_balances b JOIN prepaid_accounts a ON "
                                 "a.wallet_account_id = b.account_id WHERE a.id = :a"), {"a": account_id}).scalar()
        assert balance == D("-30.00")
