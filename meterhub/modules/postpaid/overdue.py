"""The overdue policy of a property (issue 21 item 4), applied to each overdue bill every day by the overdue job.

* reminders: on the day a bill becomes overdue, then every ``remind_every_days`` days (portal message);
* a late fee: ``late_fee_daily_rate`` × what is outstanding (late fees excluded) per overdue day, as a bill line
  and a ledger transfer (receivable → ``revenue_late_fees``, keyed by bill and day: never twice), all of a bill's
  late fees capped at ``late_fee_cap_rate`` × the bill's own total;
* a cut-off: after ``cutoff_days`` overdue days the account's meters are switched off (keep-power respected);
  the console asks for the confirmation of a switch-off before such a policy is saved.

A property without a policy keeps the defaults: a reminder every 3 days, no fee, no cut-off.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ...devices.models import Meter
from ...errors import ValidationError
from ...i18n import _l, stored
from ...ledger import post as ledger
from ...ledger.money import round_money
from ...tenants import audit
from ..prepaid.models import MeterState, PrepaidAccount
from .models import Bill, BillLine, PostpaidPolicy

DEFAULT = PostpaidPolicy(remind_every_days=3, late_fee_daily_rate=Decimal(0), late_fee_cap_rate=Decimal(0),
                         cutoff_days=None, bill_day=None, confirm_on_run=True)


def policy_of(session: Session, property_id: int) -> PostpaidPolicy:
    """The property's policy (the defaults when it has none)."""
    return session.get(PostpaidPolicy, property_id) or DEFAULT


def save_policy(session: Session, group_id: int, property_id: int, *, bill_day: object, confirm_on_run: bool,
                remind_every_days: object, late_fee_daily_rate: object, late_fee_cap_rate: object,
                cutoff_days: object, actor: str, operator_id: int | None = None) -> PostpaidPolicy:
    """Validate and store a property's policy; a bad value is refused with a message naming it."""
    errors: dict[str, str] = {}

    def whole(name: str, raw: object, low: int, high: int, optional: bool) -> int | None:
        text = str(raw if raw is not None else "").strip()
        if not text and optional:
            return None
        if not text.isdigit() or not low <= int(text) <= high:
            errors[name] = str(_l("a whole number from %(low)d to %(high)d", low=low, high=high))
            return None
        return int(text)

    def rate(name: str, raw: object, high: Decimal) -> Decimal:
        try:
            value = Decimal(str(raw or "0").strip())
        except ArithmeticError:
            value = Decimal(-1)
        if not value.is_finite() or not Decimal(0) <= value <= high or value != value.quantize(Decimal("0.000001")):
            errors[name] = str(_l("a number from 0 to %(high)s with at most 6 decimals", high=high))
            return Decimal(0)
        return value

    values = {"bill_day": whole("bill_day", bill_day, 1, 28, True),
              "remind_every_days": whole("remind_every_days", remind_every_days, 1, 90, False),
              "late_fee_daily_rate": rate("late_fee_daily_rate", late_fee_daily_rate, Decimal("0.01")),
              "late_fee_cap_rate": rate("late_fee_cap_rate", late_fee_cap_rate, Decimal(1)),
              "cutoff_days": whole("cutoff_days", cutoff_days, 1, 365, True), "confirm_on_run": bool(confirm_on_run)}
    if errors:
        raise ValidationError(_l("The post-paid policy is invalid: %(errors)s",
                                 errors="; ".join(f"{k}: {v}" for k, v in errors.items())),
                              dict.fromkeys(errors, "invalid"), messages=dict(errors))
    policy = session.get(PostpaidPolicy, property_id)
    if policy is None:
        policy = PostpaidPolicy(group_id=group_id, property_id=property_id)
        session.add(policy)
    for key, value in values.items():
        setattr(policy, key, value)
    session.flush()
    audit.record(session, group_id, "postpaid.policy", actor=actor, operator_id=operator_id, object_type="property",
                 object_id=property_id, detail={k: str(v) for k, v in values.items()})
    return policy


def late_fee(session: Session, bill: Bill, policy: PostpaidPolicy, day: date) -> Decimal:
    """Charge the day's late fee on ``bill`` (once per day, within the cap); the amount charged."""
    if not policy.late_fee_daily_rate:
        return Decimal(0)
    fees = session.execute(select(func.coalesce(func.sum(BillLine.amount), 0)).where(
        BillLine.bill_id == bill.id, BillLine.kind == "late_fee")).scalar_one()
    if session.execute(select(BillLine.id).where(BillLine.bill_id == bill.id, BillLine.fee_day == day)).first():
        return Decimal(0)
    base = bill.total - fees
    room = round_money(base * policy.late_fee_cap_rate) - fees
    amount = min(round_money((bill.outstanding - fees if bill.outstanding > fees else bill.outstanding)
                             * policy.late_fee_daily_rate), room)
    if amount <= 0:
        return Decimal(0)
    from .service import _receivable

    account = session.get(PrepaidAccount, bill.account_id)
    revenue = ledger.ensure_account(session, bill.group_id, "revenue_late_fees", f"revenue_late_fees:{bill.property_id}",
                                    property_id=bill.property_id)
    reason = stored(_l("Late fee on bill %(bill)s for %(day)s", bill=bill.number, day=day), 300)
    ledger.post_transfer(session, bill.group_id, kind="late_fee", key=f"latefee:{bill.id}:{day.isoformat()}",
                         request={"op": "late_fee", "bill": bill.id, "day": day.isoformat(), "amount": str(amount)},
                         legs=[(_receivable(session, account), -amount), (revenue, amount)], amount=-amount,
                         actor="postpaid", reason=reason)
    session.add(BillLine(group_id=bill.group_id, bill_id=bill.id, kind="late_fee", description=reason,
                         amount=amount, fee_day=day))
    bill.total += amount
    session.flush()
    return amount


def cut_off(session: Session, bill: Bill, policy: PostpaidPolicy, overdue_days: int) -> list[int]:
    """After ``cutoff_days`` overdue days: switch the account's meters off (not those on keep-power); ids."""
    from ..prepaid.control import can_actuate, relay_command, set_desired

    if policy.cutoff_days is None or overdue_days < policy.cutoff_days:
        return []
    meters = session.execute(select(Meter).join(MeterState, MeterState.meter_id == Meter.id).where(
        MeterState.account_id == bill.account_id, Meter.active, Meter.keep_power.is_(False),
        Meter.relay_desired.is_not(False))).scalars().all()
    done = [m.id for m in meters if can_actuate(session, m, relay_command(m, False)[0])
            and set_desired(session, m, False, actor="postpaid", source="postpaid") is not None]
    if done:
        audit.record(session, bill.group_id, "postpaid.cutoff", actor="postpaid", object_type="bill",
                     object_id=bill.id, detail={"meters": done, "overdue_days": overdue_days})
    return done


def reminder_due(policy: PostpaidPolicy, overdue_days: int) -> bool:
    """A reminder on the first overdue day, then every ``remind_every_days`` days."""
    return overdue_days <= 1 or (overdue_days - 1) % max(policy.remind_every_days, 1) == 0
