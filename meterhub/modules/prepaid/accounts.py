"""Opening (开户, also from a preset account), closing with settlement (销户) and meter swap (换表)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from ...i18n import _l
from ...commands.service import create_command
from ...devices.models import Meter
from ...errors import NotFound, ValidationError
from ...ledger import post as ledger
from ...ledger.money import booked_increment, parse_amount
from ...models import utcnow
from ...outbox import hold
from ...tariffs import service as tariffs
from ...tariffs.pricing import price_interval, tier_period_start
from ...tenants import audit
from ...tenants.models import Property
from .charging import charge_new_intervals
from .control import ARREARS, can_actuate, evaluate_accounts, relay_command, set_desired
from .models import Charge, MeterState, PrepaidAccount

READING_COLUMN = {"electricity": "energy_kwh", "water": "water_m3"}


def _meters(session: Session, group_id: int, property_id: int, meter_ids: list[int]) -> list[Meter]:
    meters = list(session.execute(select(Meter).where(Meter.id.in_(meter_ids), Meter.group_id == group_id))
                  .scalars())
    if not meter_ids:
        raise ValidationError(_l("Choose at least one meter."), {"meters": "required"})
    if len(meters) != len(set(meter_ids)):
        raise NotFound(_l("meters %(value)s not found",
                          value=sorted(set(meter_ids) - {m.id for m in meters})))
    for meter in meters:
        if meter.property_id != property_id:
            raise ValidationError(_l("meter %(id)s belongs to another property", id=meter.id), {"meters": "property"})
        busy = session.execute(select(PrepaidAccount.number).join(MeterState, MeterState.account_id == PrepaidAccount.id)
                               .where(MeterState.meter_id == meter.id, PrepaidAccount.status != "closed")).scalar()
        if busy:
            raise ValidationError(_l("meter %(id)s is already on account %(busy)s", id=meter.id, busy=busy), {"meters": "bound"})
    return meters


def _baseline(session: Session, meter: Meter) -> tuple[datetime, Decimal | None, dict]:
    """Latest good reading of the meter: (ts, total, TOU registers); none → first reading is the baseline."""
    column = READING_COLUMN[meter.utility]
    row = session.execute(text(
        f"SELECT ts, {column} AS total, energy_sharp_kwh, energy_peak_kwh, energy_flat_kwh, energy_valley_kwh "
        f"FROM tenant_readings WHERE meter_id = :m AND quality = 0 AND {column} IS NOT NULL ORDER BY ts DESC LIMIT 1"),
        {"m": meter.id}).first()
    if row is None:
        return utcnow(), None, {}
    return row.ts, row.total, {"last_sharp": row.energy_sharp_kwh, "last_peak": row.energy_peak_kwh,
                               "last_flat": row.energy_flat_kwh, "last_valley": row.energy_valley_kwh}


def _bind(session: Session, account: PrepaidAccount, meter: Meter, active: bool) -> None:
    ts, total, regs = _baseline(session, meter)
    values = dict(group_id=account.group_id, account_id=account.id, property_id=meter.property_id,
                  utility=meter.utility, active=active, last_ts=ts, last_total=total, cost_exact_total=0,
                  charged_total=0, period_start=None, period_usage=0, bound_at=utcnow(),
                  last_sharp=regs.get("last_sharp"), last_peak=regs.get("last_peak"),
                  last_flat=regs.get("last_flat"), last_valley=regs.get("last_valley"))
    stmt = pg_insert(MeterState).values(meter_id=meter.id, **values)
    session.execute(stmt.on_conflict_do_update(index_elements=["meter_id"], set_=values))


def create_account(session: Session, group_id: int, property_id: int, meter_ids: list[int], *,
                   room_id: int | None = None, customer_name: str = "", phone: str = "", number: str | None = None,
                   preset: bool = False, alarm1: object = "20.00", alarm2: object = "5.00",
                   overdraft_limit: object = "0.00", actor: str, operator_id: int | None = None,
                   evaluate: bool = True) -> PrepaidAccount:
    """Open an account over ``meter_ids`` (一户多表), or with ``preset`` keep it ready for one-click opening
    (``evaluate``: see :func:`open_account`)."""
    if session.get(Property, property_id) is None:
        raise NotFound(_l("property %(property_id)s not found", property_id=property_id))
    meters = _meters(session, group_id, property_id, meter_ids)
    for meter in meters:
        tariff = tariffs.resolve_tariff(session, meter)
        if tariff is None:
            raise ValidationError(_l("meter %(id)s has no price plan; assign one first", id=meter.id), {"meters": "no tariff"})
        tariffs.version_at(session, tariff.id, utcnow())
    a1, a2 = parse_amount(alarm1, "alarm1", positive=False), parse_amount(alarm2, "alarm2", positive=False)
    overdraft = parse_amount(overdraft_limit, "overdraft_limit", positive=False)
    if overdraft < 0 or a2 > a1:
        raise ValidationError(_l("need overdraft ≥ 0 and alarm 2 ≤ alarm 1"), {"alarm2": "order"})
    number = number or f"A{uuid.uuid4().hex[:10].upper()}"
    wallet = ledger.ensure_account(session, group_id, "wallet", f"wallet:{number}", name=customer_name or number,
                                   property_id=property_id)
    account = PrepaidAccount(group_id=group_id, property_id=property_id, room_id=room_id, number=number,
                             customer_name=customer_name, phone=phone, status="preset", wallet_account_id=wallet,
                             alarm1=a1, alarm2=a2, overdraft_limit=overdraft)
    session.add(account)
    session.flush()
    for meter in meters:
        _bind(session, account, meter, active=False)
    audit.record(session, group_id, "prepaid.account.create", actor=actor, operator_id=operator_id,
                 object_type="prepaid_account", object_id=account.id,
                 detail={"number": number, "meters": sorted(meter_ids), "preset": preset})
    if not preset:
        open_account(session, group_id, account.id, customer_name=customer_name, phone=phone, actor=actor,
                     operator_id=operator_id, evaluate=evaluate)
    return account


def open_account(session: Session, group_id: int, account_id: int, *, customer_name: str, phone: str, actor: str,
                 operator_id: int | None = None, evaluate: bool = True) -> PrepaidAccount:
    """Open a preset account for a customer: meters start charging from their latest reading.

    ``evaluate`` False leaves the control loop to a top-up in the same transaction (opening with a first
    payment): an account evaluated with no money is in arrears, which trips its meters and raises an arrears
    alarm that the top-up clears a moment later."""
    account = session.get(PrepaidAccount, account_id)
    if account is None or account.group_id != group_id:
        raise NotFound(_l("prepaid account %(account_id)s not found", account_id=account_id))
    if account.status != "preset":
        raise ValidationError(_l("account %(number)s is %(status)s, not preset",
                                 number=account.number, status=account.status), {"status": "state"})
    if not customer_name.strip():
        raise ValidationError(_l("the customer's name is required"), {"customer_name": "required"})
    account.customer_name, account.phone = customer_name.strip(), phone.strip()
    account.status, account.opened_at, account.alarm_level = "open", utcnow(), 0
    for state in session.execute(select(MeterState).where(MeterState.account_id == account.id)).scalars():
        _bind(session, account, session.get(Meter, state.meter_id), active=True)
    session.flush()
    audit.record(session, group_id, "prepaid.account.open", actor=actor, operator_id=operator_id,
                 object_type="prepaid_account", object_id=account.id, detail={"customer": account.customer_name})
    if evaluate:
        evaluate_accounts(session, [account.id], actor=actor)  # no money yet: below the trip line → off
    return account


def close_account(session: Session, group_id: int, account_id: int, key: str, *, channel: str = "cash",
                  actor: str, operator_id: int | None = None) -> Decimal:
    """Charge the last usage, settle the balance in cash (refund or collect arrears), close; returns the settled amount."""
    account = session.get(PrepaidAccount, account_id)
    if account is None or account.group_id != group_id:
        raise NotFound(_l("prepaid account %(account_id)s not found", account_id=account_id))
    request = {"op": "close", "account": account.id}
    ledger.lock_accounts(session, [account.wallet_account_id])
    if (existing := ledger.find_transfer(session, group_id, key)) is not None:
        return -ledger.check_replay(existing, ledger.request_hash(request), key).amount
    if account.status == "closed" and ledger.balance_of(session, account.wallet_account_id) == 0:
        return Decimal("0")  # a retry of a close that settled nothing: closing is done
    if account.status != "open":
        raise ValidationError(_l("account %(number)s is %(status)s",
                                 number=account.number, status=account.status), {"status": "state"})
    states = list(session.execute(select(MeterState).where(MeterState.account_id == account.id, MeterState.active))
                  .scalars())
    charge_new_intervals(session, meter_ids=[s.meter_id for s in states], control=False)
    balance = ledger.balance_of(session, account.wallet_account_id)
    drawer = ledger.ensure_account(session, group_id, "cash_drawer", f"cash_drawer:{account.property_id}",
                                   property_id=account.property_id)
    transfer = None
    if balance != 0:  # nothing to settle on an empty wallet: no transfer, just the close
        transfer, _ = ledger.post_transfer(
            session, group_id, kind="settlement", key=key, request=request,
            legs=[(account.wallet_account_id, -balance), (drawer, balance)],
            wallet_account_id=account.wallet_account_id, amount=-balance, channel=channel, actor=actor,
            operator_id=operator_id, receipt_no=ledger.next_receipt_no(session, group_id),
        )
    account.status, account.closed_at = "closed", utcnow()
    for state in states:
        state.active = False
        set_desired(session, session.get(Meter, state.meter_id), False, actor=actor, operator_id=operator_id)
    audit.record(session, group_id, "prepaid.account.close", actor=actor, operator_id=operator_id,
                 object_type="prepaid_account", object_id=account.id,
                 detail={"settled": str(balance), "transfer": transfer.id if transfer else None})
    return balance


def _reading(raw: object, field: str) -> Decimal:
    """A counter reading typed at a meter swap: a finite, non-negative number (kWh or m³)."""
    if isinstance(raw, Decimal) and raw.is_finite() and raw >= 0:
        return raw
    try:
        value = Decimal(str(raw).strip())
    except (InvalidOperation, ValueError) as err:
        raise ValidationError(_l("%(field)s %(raw)r is not a number; type the counter as shown on the "
                                 "meter",
                                 field=field, raw=raw),
                              {field: "not a number"}) from err
    if not value.is_finite() or not 0 <= value < 10**12:
        raise ValidationError(_l("%(field)s must be a counter reading from 0 to 999999999999", field=field), {field: "range"})
    return value


def swap_meter(session: Session, group_id: int, old_meter_id: int, new_meter_id: int, *, final_reading: object,
               new_initial_reading: object, at: datetime | None = None, actor: str,
               operator_id: int | None = None) -> Charge | None:
    """换表: charge the old meter up to its final reading, then bind the new meter to the same account."""
    final, initial = _reading(final_reading, "final_reading"), _reading(new_initial_reading, "new_initial_reading")
    at = at or utcnow()
    state = session.get(MeterState, old_meter_id)
    if state is None or not state.active or state.group_id != group_id:
        raise NotFound(_l("meter %(old_meter_id)s is not on an open account", old_meter_id=old_meter_id))
    old, new = session.get(Meter, old_meter_id), session.get(Meter, new_meter_id)
    if new is None or new.group_id != group_id or new.utility != old.utility:
        raise ValidationError(_l("meter %(new_meter_id)s cannot replace meter %(old_meter_id)s",
                                 new_meter_id=new_meter_id, old_meter_id=old_meter_id), {"new_meter": "invalid"})
    _meters(session, group_id, state.property_id, [new_meter_id])
    charge_new_intervals(session, meter_ids=[old_meter_id], until=at, control=False)
    session.refresh(state)
    charge = _final_charge(session, state, at, Decimal(final)) if state.last_total is not None else None
    account = session.get(PrepaidAccount, state.account_id)
    values = dict(group_id=group_id, account_id=account.id, property_id=new.property_id, utility=new.utility,
                  active=True, last_ts=at, last_total=initial, last_sharp=None,
                  last_peak=None, last_flat=None, last_valley=None, cost_exact_total=state.cost_exact_total,
                  charged_total=state.charged_total, period_start=state.period_start,
                  period_usage=state.period_usage, bound_at=utcnow())
    session.execute(pg_insert(MeterState).values(meter_id=new.id, **values)
                    .on_conflict_do_update(index_elements=["meter_id"], set_=values))
    state.active = False
    new.room_id = old.room_id  # it serves the old meter's room from now on: installed there at the swap
    old.removed_at, new.installed_at, new.removed_at = at, at, None
    _bind_purchase_counter(session, new, account)
    new.keep_power = old.keep_power
    audit.record(session, group_id, "prepaid.meter.swap", actor=actor, operator_id=operator_id,
                 object_type="meter", object_id=old.id,
                 detail={"new_meter": new.id, "final_reading": str(final_reading),
                         "new_initial_reading": str(new_initial_reading), "account": account.number,
                         "purchase_count": account.purchase_count})
    # the new meter's counters and relay are read at installation, and its relay set as the account needs
    desired = old.relay_desired if old.relay_desired is not None else account.alarm_level < ARREARS
    create_command(session, new, "read_now", {}, actor=actor, operator_id=operator_id)
    if can_actuate(session, new, relay_command(new, bool(desired))[0]):
        set_desired(session, new, bool(desired), actor=actor, operator_id=operator_id, force=True)
    column = "water_m3" if new.utility == "water" else "energy_kwh"
    hold(session, group_id, "reports", "meterhub.modules.prepaid.swap_history:after_swap",
         {"group_id": group_id, "old_meter_id": old.id, "new_meter_id": new.id, "at": at.isoformat(),
          "final": str(final), "initial": str(initial), "column": column, "job_timeout": 600},
         description=f"meter swap {old.id} -> {new.id}: history")
    evaluate_accounts(session, [account.id], actor=actor)
    return charge


def _bind_purchase_counter(session: Session, new: Meter, account: PrepaidAccount) -> None:
    """The swapped-in meter's own purchase counter (its latest reading) against ours: compared from now on
    net of that difference, so the swap raises no purchase-counter mismatch."""
    count = session.execute(text(
        "SELECT purchase_count FROM tenant_readings WHERE meter_id = :m AND purchase_count IS NOT NULL "
        "ORDER BY ts DESC LIMIT 1"), {"m": new.id}).scalar()
    offset = int(count) - account.purchase_count if count is not None else 0
    session.execute(text("UPDATE prepaid_meter_state SET purchase_count_offset = :o, meter_purchase_count = NULL "
                         "WHERE meter_id = :m"), {"o": offset, "m": new.id})


def _final_charge(session: Session, state: MeterState, at: datetime, final: Decimal) -> Charge | None:
    """Price and book (last_ts, at] of a meter being swapped out (one meter: the pure functions)."""
    if at <= state.last_ts:
        return None
    meter = session.get(Meter, state.meter_id)
    usage = max(Decimal(0), final - state.last_total)
    tariff = tariffs.resolve_tariff(session, meter)
    version = tariffs.version_at(session, tariff.id, state.last_ts)
    plan = tariffs.as_plan(version)
    tz = session.get(Property, state.property_id).timezone
    period = tier_period_start(state.last_ts, tz, plan.tier_period)
    cum = state.period_usage if state.period_start == period else Decimal(0)
    price = price_interval(plan, state.last_ts, at, tz, usage, cum_before=cum)
    amount = booked_increment(state.cost_exact_total, price.cost)
    account = session.get(PrepaidAccount, state.account_id)
    transfer_id = None
    if amount:
        revenue = ledger.ensure_account(session, state.group_id, f"revenue_{state.utility}",
                                        f"revenue_{state.utility}:{state.property_id}", property_id=state.property_id)
        transfer, _ = ledger.post_transfer(
            session, state.group_id, kind="charge", key=f"swap:{meter.id}:{at.isoformat()}",
            request={"op": "swap-final", "meter": meter.id, "at": at.isoformat(), "usage": str(usage)},
            legs=[(account.wallet_account_id, -amount), (revenue, amount)], amount=-amount, actor="charging",
            wallet_account_id=account.wallet_account_id, reason="final reading at meter swap")
        transfer_id = transfer.id
    charge = Charge(group_id=state.group_id, meter_id=meter.id, account_id=account.id, transfer_id=transfer_id,
                    tariff_version_id=version.id, interval_start=state.last_ts, interval_end=at, usage=usage,
                    cost_exact=price.cost, amount=amount, note="swap-final")
    session.add(charge)
    state.last_ts, state.last_total = at, final
    state.cost_exact_total += price.cost
    state.charged_total += amount
    state.period_start, state.period_usage = period, cum + usage
    session.flush()
    return charge
