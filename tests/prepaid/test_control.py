"""Control loop: balance runs out → switch-off queued; top-up → switch-on; keep-power → none; valves; swap."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select, text

from meterhub.commands.models import Command
from meterhub.db import service_session
from meterhub.devices.models import Device, Meter
from meterhub.ledger import check_ledger
from meterhub.modules.prepaid import accounts, cashier, control
from meterhub.modules.prepaid.charging import charge_new_intervals
from meterhub.modules.prepaid.models import PrepaidAccount, PrepaidEvent

from .conftest import EPOCH, add_meters, write_readings

D = Decimal


def commands(s, meter_id):
    """The relay/valve commands of a meter (top-up writes to a meter-side prepaid meter are left out)."""
    return [(c.kind, c.params, c.state) for c in s.execute(
        select(Command).where(Command.meter_id == meter_id, Command.kind != "write_topup")
        .order_by(Command.id)).scalars()]


def setup_account(world, meters, topup="10.00"):
    with world.app.app_context(), service_session() as s:
        write_readings(s, world.group_id, [(m, EPOCH, D(0)) for m in meters])
    with world.app.app_context(), service_session() as s:
        account = accounts.create_account(s, world.group_id, world.property_id, meters, customer_name="Han Meimei",
                                          alarm1="8.00", alarm2="4.00", actor="t")
        account_id = account.id
        # opened with no money: below the trip line → switch-off queued right away
        assert account.alarm_level == 3
        cashier.topup(s, world.group_id, account_id, topup, "cash", f"open-{account_id}", actor="t")
        assert s.get(PrepaidAccount, account_id).alarm_level == (0 if D(topup) > 8 else 2)
    return account_id


def test_balance_runs_out_then_topup_restores(world):
    meters = world.meters[:2]  # 一户多表
    with world.app.app_context(), service_session() as s:
        s.get(Meter, meters[1]).keep_power = True
    account_id = setup_account(world, meters)
    with world.app.app_context(), service_session() as s:
        assert [k for k, p, st in commands(s, meters[0])] == ["switch", "switch"]
        assert commands(s, meters[0])[-1] == ("switch", {"closed": True}, "queued")  # the off was superseded
        assert commands(s, meters[0])[0][2] == "cancelled"
    t = EPOCH
    levels = []
    for kwh in ("3", "5", "7", "11"):  # cumulative: 3 → 7 left; 5 → 5 left... 11 → -1
        t += timedelta(minutes=30)
        with world.app.app_context(), service_session() as s:
            write_readings(s, world.group_id, [(meters[0], t, D(kwh))])
            charge_new_intervals(s, until=t)
            levels.append(s.get(PrepaidAccount, account_id).alarm_level)
    assert levels == [1, 1, 2, 3]
    with world.app.app_context(), service_session() as s:
        kinds = [e.kind for e in s.execute(select(PrepaidEvent).where(PrepaidEvent.account_id == account_id)
                                           .order_by(PrepaidEvent.id)).scalars()]
        assert kinds == ["arrears", "cleared", "alarm1", "alarm2", "arrears"]  # each crossing once
        assert commands(s, meters[0])[-1] == ("switch", {"closed": False}, "queued")
        assert s.get(Meter, meters[0]).relay_desired is False
        assert all(k != "switch" or p["closed"] for k, p, _ in commands(s, meters[1])), "keep-power meter tripped"
        cashier.topup(s, world.group_id, account_id, "20.00", "card", "again", actor="t")
        assert commands(s, meters[0])[-1] == ("switch", {"closed": True}, "queued")
        assert s.get(Meter, meters[0]).relay_desired is True
        assert check_ledger(s, world.group_id).ok


def test_keep_power_and_resume_prepaid(world):
    meter_id = world.meters[0]
    account_id = setup_account(world, [meter_id], topup="1.00")
    with world.app.app_context(), service_session() as s:
        meter = s.get(Meter, meter_id)
        control.keep_power(s, meter, True, actor="electrician")
        write_readings(s, world.group_id, [(meter_id, EPOCH + timedelta(hours=1), D(5))])
        charge_new_intervals(s, until=EPOCH + timedelta(hours=1))
        assert s.get(PrepaidAccount, account_id).alarm_level == 3
        assert commands(s, meter_id)[-1][0] == "keep_power"  # no switch-off while on keep-power
        control.keep_power(s, meter, False, actor="electrician")
        assert commands(s, meter_id)[-1] == ("resume_prepaid", {"closed": False}, "queued")
        assert meter.relay_desired is False


def test_water_valve_and_offline_meter_gets_desired_state_again(world):
    with world.app.app_context(), service_session() as s:
        water = add_meters(s, world.group_id, world.property_id, world.gateway_id, world.room_id, 1, "water")[0]
        from meterhub.tariffs import service as tariffs
        from meterhub.tariffs.pricing import PlanVersion

        tariff = tariffs.create_tariff(s, world.group_id, "Water 4.50", "water")
        tariffs.add_version(s, tariff, EPOCH, PlanVersion("flat", tariffs.flat_prices(D("4.50"))))
        tariffs.assign(s, world.group_id, "property", world.property_id, tariff)
        s.execute(text("INSERT INTO readings (group_id, meter_id, ts, water_m3, quality, source) "
                       "VALUES (:g, :m, :ts, 0, 0, 'poll')"), {"g": world.group_id, "m": water, "ts": EPOCH})
    with world.app.app_context(), service_session() as s:
        account_id = accounts.create_account(s, world.group_id, world.property_id, [water], customer_name="W",
                                             actor="t").id
        cashier.topup(s, world.group_id, account_id, "9.00", "cash", f"w-{account_id}", actor="t")
        s.execute(text("INSERT INTO readings (group_id, meter_id, ts, water_m3, quality, source) "
                       "VALUES (:g, :m, :ts, 2.5, 0, 'poll')"), {"g": world.group_id, "m": water,
                                                                 "ts": EPOCH + timedelta(hours=1)})
        charge_new_intervals(s, until=EPOCH + timedelta(hours=1))
        assert commands(s, water)[-1] == ("valve", {"open": False}, "queued")  # 9 - 11.25 < 0
        # the command expires while the meter is offline; the desired state stays and is re-sent
        s.execute(text("UPDATE commands SET state = 'expired' WHERE meter_id = :m AND state = 'queued'"), {"m": water})
        meter = s.get(Meter, water)
        meter.relay_closed = True  # the meter comes back and reports the valve still open
        queued = control.reconcile_relays(s, [water])
        assert [(c.kind, c.params) for c in queued] == [("valve", {"open": False})]
        assert control.reconcile_relays(s, [water]) == []  # not twice while one is open


def test_duplicates_late_readings_resets_and_meter_swap(world):
    old, new = world.meters[0], world.meters[2]
    account_id = setup_account(world, [old], topup="100.00")
    t = EPOCH
    with world.app.app_context(), service_session() as s:
        write_readings(s, world.group_id, [(old, t + timedelta(minutes=30), D(10)), (old, t + timedelta(hours=1), D(12))])
        charge_new_intervals(s, until=t + timedelta(hours=1))
        # a late reading inside an already charged interval and a re-run change nothing
        write_readings(s, world.group_id, [(old, t + timedelta(minutes=45), D(11))])
        charge_new_intervals(s, until=t + timedelta(hours=1))
        # a counter going backwards costs nothing, its recovery costs nothing extra
        write_readings(s, world.group_id, [(old, t + timedelta(minutes=90), D(1)), (old, t + timedelta(hours=2), D(13))])
        charge_new_intervals(s, until=t + timedelta(hours=2))
        amounts = s.execute(text("SELECT amount, note FROM prepaid_charges WHERE meter_id = :m ORDER BY interval_end"),
                            {"m": old}).all()
        assert [(a, n) for a, n in amounts] == [(D("10.00"), ""), (D("2.00"), ""), (D("0.00"), "reset"),
                                                (D("1.00"), "")]
        assert s.execute(select(PrepaidEvent.kind).where(PrepaidEvent.meter_id == old)).scalars().all() == \
            ["counter_reset"]
        charge = accounts.swap_meter(s, world.group_id, old, new, final_reading=D("15.5"), new_initial_reading="3",
                                     at=t + timedelta(hours=2, minutes=20), actor="t")
        assert charge.amount == D("2.50")
        write_readings(s, world.group_id, [(new, t + timedelta(hours=3), D(7))])
        charge_new_intervals(s, until=t + timedelta(hours=3))
        assert s.execute(text("SELECT amount FROM prepaid_charges WHERE meter_id = :m"), {"m": new}).scalars().all() \
            == [D("4.00")]
        wallet = s.get(PrepaidAccount, account_id).wallet_account_id
        assert s.execute(text("SELECT balance FROM ledger_balances WHERE account_id = :a"), {"a": wallet}).scalar() \
            == D("100.00") - D("19.50")
        settled = accounts.close_account(s, world.group_id, account_id, "close-1", actor="t")
        assert settled == D("80.50")
        assert check_ledger(s, world.group_id).ok


def test_closing_an_empty_account_settles_nothing_and_retries_cleanly(world):
    with world.app.app_context(), service_session() as s:
        account = accounts.create_account(s, world.group_id, world.property_id, [world.meters[2]],
                                          room_id=world.room_id, customer_name="Empty", actor="t")
        assert accounts.close_account(s, world.group_id, account.id, "close-empty", actor="t") == D("0")
        assert s.get(PrepaidAccount, account.id).status == "closed"
        assert accounts.close_account(s, world.group_id, account.id, "close-empty", actor="t") == D("0")
        transfers = s.execute(text("SELECT count(*) FROM ledger_transfers WHERE idempotency_key = 'close-empty'"))
        assert transfers.scalar() == 0
        assert check_ledger(s, world.group_id).ok


def test_metering_only_meter_keeps_the_desired_state_but_gets_no_command(world):
    with world.app.app_context(), service_session() as s:
        plain = add_meters(s, world.group_id, world.property_id, world.gateway_id, world.room_id, 1)[0]
        s.get(Device, s.get(Meter, plain).device_id).config = {"variant": "dtsd1352"}  # no relay
    setup_account(world, [plain], topup="1.00")
    with world.app.app_context(), service_session() as s:
        account = s.execute(select(PrepaidAccount).where(PrepaidAccount.customer_name == "Han Meimei")
                            .order_by(PrepaidAccount.id.desc())).scalars().first()
        assert account.alarm_level == 2
        assert commands(s, plain) == []
        assert s.get(Meter, plain).relay_desired is True
