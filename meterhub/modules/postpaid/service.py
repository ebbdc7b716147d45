"""Post-paid accounts and bills: generate (draft) → confirm (receivable booked) → payments → paid / overdue.

Money: confirming books the bill on the customer's receivable ledger account (``receivable:<number>``,
negative while owed) against ``revenue_postpaid:<property>``; a payment moves money from the payment
channel into the receivable, keyed by the caller's idempotency key. Turning an account post-paid stops its
meters' real-time prepaid charging (their charging state becomes inactive): usage is billed per period.
Reminders go to the tenant portal (``portal_messages`` of the alarms module) and are logged once per bill,
kind and day in ``postpaid_reminders``.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from ...db import service_session
from ...devices.models import Meter
from ...errors import NotFound, ValidationError
from ...i18n import _l, joined, stored
from ...ledger import post as ledger
from ...ledger.models import CHANNEL_ACCOUNT
from ...ledger.money import parse_amount, round_money
from ...models import utcnow
from ...tariffs import service as tariffs
from ...tariffs.pricing import price_interval
from ...tenants import audit
from ...tenants.models import Property
from ..apportion.models import ApportionRule, ApportionRun, ApportionShare
from ..apportion.statement import period_bounds
from ..apportion.usage import window_usage
from ..billing_items.models import BillingCharge, BillingItem
from ..prepaid.models import MeterState, PrepaidAccount
from .models import UNPAID, Bill, BillLine, BillPayment, BillReminder, PostpaidAccount

log = logging.getLogger(__name__)
ZERO = Decimal(0)


def _account(session: Session, group_id: int, account_id: int) -> PrepaidAccount:
    account = session.get(PrepaidAccount, account_id)
    if account is None or account.group_id != group_id:
        raise NotFound(_l("Account %(account)s not found.", account=account_id))
    return account


def load_bill(session: Session, group_id: int, bill_id: int, *, lock: bool = False) -> Bill:
    """The group's bill or NotFound."""
    stmt = select(Bill).where(Bill.id == bill_id, Bill.group_id == group_id)
    bill = session.execute(stmt.with_for_update() if lock else stmt).scalar()
    if bill is None:
        raise NotFound(_l("Bill %(bill)s not found.", bill=bill_id))
    return bill


def make_postpaid(session: Session, group_id: int, account_id: int, *, due_days: int = 15, actor: str,
                  operator_id: int | None = None) -> PostpaidAccount:
    """Bill this open account per period from now on (its meters stop prepaid charging)."""
    account = _account(session, group_id, account_id)
    if account.status != "open":
        raise ValidationError(_l("Account %(account)s is not open; open it first.", account=account.number),
                              {"status": "state"})
    if not 0 <= due_days <= 120:
        raise ValidationError(_l("Due days must be a whole number from 0 to 120 (0: due on the day the bill is "
                                 "confirmed); %(value)s is not.", value=due_days), {"due_days": "range"})
    session.execute(update(MeterState).where(MeterState.account_id == account.id).values(active=False))
    row = PostpaidAccount(group_id=group_id, account_id=account.id, property_id=account.property_id,
                          due_days=due_days)
    session.add(row)
    session.flush()
    audit.record(session, group_id, "postpaid.account", actor=actor, operator_id=operator_id,
                 object_type="prepaid_account", object_id=account.id, detail={"due_days": due_days})
    return row


def _usage_lines(session: Session, account: PrepaidAccount, start: datetime, end: datetime) -> list[BillLine]:
    tz = session.get(Property, account.property_id).timezone
    lines = []
    for state in session.execute(select(MeterState).where(MeterState.account_id == account.id)
                                 .order_by(MeterState.meter_id)).scalars():
        meter = session.get(Meter, state.meter_id)
        used = window_usage(session, [(meter.id, start, end)], meter.utility)[0]
        tariff = tariffs.resolve_tariff(session, meter)
        if tariff is None:
            raise ValidationError(_l("Meter %(meter)s has no price plan; assign one before billing.",
                                     meter=meter.name or meter.id), {"tariff": "none"})
        plan = tariffs.as_plan(tariffs.version_at(session, tariff.id, start))
        cost = price_interval(plan, start, end, tz, used.usage).cost if used.usage else ZERO
        unit = "kWh" if meter.utility == "electricity" else "m³"
        usage = _l("Usage of meter %(meter)s: %(usage)s %(unit)s × %(plan)s", meter=meter.name or meter.id,
                   usage=used.usage, unit=unit, plan=tariff.name)
        description = joined(usage, _l("offline: counted to its last reading")) if used.offline else usage
        lines.append(BillLine(kind="usage", description=stored(description, 300),
                              quantity=used.usage, amount=round_money(cost), source_id=meter.id))
    return lines


def _share_description(session: Session, share: ApportionShare) -> object:
    run = session.get(ApportionRun, share.run_id)
    rule = session.get(ApportionRule, run.rule_id)
    tz = ZoneInfo(session.get(Property, run.property_id).timezone)
    return _l("Public-area share (%(rule)s) %(start)s–%(end)s", rule=rule.name,
              start=run.period_start.astimezone(tz).date(),
              end=(run.period_end.astimezone(tz) - timedelta(seconds=1)).date())


def generate_bill(session: Session, group_id: int, account_id: int, first_day: date, end_day: date, *, actor: str,
                  operator_id: int | None = None) -> Bill:
    """A draft bill for ``[first_day, end_day)``: metered usage, unbilled apportioned shares and billing items."""
    account = _account(session, group_id, account_id)
    if session.get(PostpaidAccount, account.id) is None and account.status != "closed":
        raise ValidationError(_l("Account %(account)s is prepaid; make it post-paid first.", account=account.number),
                              {"account": "prepaid"})
    tz = session.get(Property, account.property_id).timezone
    start, end = period_bounds(tz, first_day, end_day)
    if session.execute(select(Bill.id).where(Bill.account_id == account.id, Bill.status != "void",
                                             Bill.period_start < end_day, Bill.period_end > first_day)).first():
        raise ValidationError(_l("Account %(account)s already has a bill overlapping %(start)s–%(end)s.",
                                 account=account.number, start=first_day, end=end_day),
                              {"period": "billed"})
    number = f"B{group_id}-{account.number}-{first_day:%Y%m%d}"
    bill = Bill(group_id=group_id, property_id=account.property_id, account_id=account.id, number=number,
                period_start=first_day, period_end=end_day, status="draft")
    session.add(bill)
    session.flush()
    lines = _usage_lines(session, account, start, end) if session.get(PostpaidAccount, account.id) else []
    for share in session.execute(select(ApportionShare).where(
            ApportionShare.account_id == account.id, ApportionShare.disposition == "billed",
            ApportionShare.bill_id.is_(None)).with_for_update()).scalars():
        share.bill_id = bill.id
        lines.append(BillLine(kind="apportion", description=stored(_share_description(session, share), 300),
                              amount=share.amount, source_id=share.id))
    for charge, name in session.execute(select(BillingCharge, BillingItem.name).join(
            BillingItem, BillingItem.id == BillingCharge.item_id).where(
            BillingCharge.account_id == account.id, BillingCharge.status == "billed",
            BillingCharge.bill_id.is_(None), BillingCharge.due_date < end_day).with_for_update(of=BillingCharge)):
        charge.bill_id = bill.id
        lines.append(BillLine(kind="item", description=stored(_l("%(item)s due %(date)s", item=name,
                                                                 date=charge.due_date), 300), amount=charge.amount,
                              source_id=charge.id))
    for line in lines:
        line.group_id, line.bill_id = group_id, bill.id
    session.add_all(lines)
    bill.total = sum((line.amount for line in lines), ZERO)
    session.flush()
    audit.record(session, group_id, "postpaid.bill.generate", actor=actor, operator_id=operator_id,
                 object_type="bill", object_id=bill.id, detail={"number": number, "total": str(bill.total)})
    return bill


def _receivable(session: Session, account: PrepaidAccount) -> int:
    return ledger.ensure_account(session, account.group_id, "receivable", f"receivable:{account.number}",
                                 name=account.customer_name or account.number, property_id=account.property_id)


def confirm_bill(session: Session, group_id: int, bill_id: int, *, today: date | None = None, actor: str,
                 operator_id: int | None = None) -> Bill:
    """Draft → confirmed: the bill is owed (receivable booked) and due after the account's due days."""
    bill = load_bill(session, group_id, bill_id, lock=True)
    if bill.status != "draft":
        raise ValidationError(_l("Bill %(bill)s is not a draft; only a draft can be confirmed.", bill=bill.number),
                              {"status": "state"})
    account = session.get(PrepaidAccount, bill.account_id)
    settings = session.get(PostpaidAccount, account.id)
    today = today or utcnow().astimezone(ZoneInfo(session.get(Property, bill.property_id).timezone)).date()
    bill.due_date = today + timedelta(days=settings.due_days if settings else 15)
    bill.status, bill.confirmed_at = ("confirmed", utcnow()) if bill.total else ("paid", utcnow())
    if bill.total:
        revenue = ledger.ensure_account(session, group_id, "revenue_postpaid", f"revenue_postpaid:{bill.property_id}",
                                        property_id=bill.property_id)
        ledger.post_transfer(session, group_id, kind="bill", key=f"bill:{bill.id}:confirm",
                             request={"op": "bill", "bill": bill.id, "total": str(bill.total)},
                             legs=[(_receivable(session, account), -bill.total), (revenue, bill.total)],
                             amount=-bill.total, actor=actor, operator_id=operator_id, reason=stored(_l("Bill %(bill)s", bill=bill.number)))
    audit.record(session, group_id, "postpaid.bill.confirm", actor=actor, operator_id=operator_id,
                 object_type="bill", object_id=bill.id, detail={"total": str(bill.total),
                                                                "due": bill.due_date.isoformat()})
    return bill


def record_payment(session: Session, group_id: int, bill_id: int, amount: object, channel: str, key: str, *,
                   actor: str, operator_id: int | None = None) -> Bill:
    """A payment against a confirmed bill (never more than what is outstanding); idempotent by ``key``."""
    value = parse_amount(amount)
    if channel not in CHANNEL_ACCOUNT:
        raise ValidationError(f"payment channel {channel!r} must be one of {', '.join(CHANNEL_ACCOUNT)}",
                              {"channel": "invalid"})
    bill = load_bill(session, group_id, bill_id, lock=True)
    request = {"op": "bill-payment", "bill": bill.id, "amount": str(value), "channel": channel}
    if (existing := ledger.find_transfer(session, group_id, key)) is not None:
        ledger.check_replay(existing, ledger.request_hash(request), key)
        return bill
    if bill.status not in UNPAID:
        raise ValidationError(_l("Bill %(bill)s has nothing left to pay.", bill=bill.number), {"status": "state"})
    if value > bill.outstanding:
        raise ValidationError(_l("Bill %(bill)s has ¥%(outstanding)s outstanding; ¥%(amount)s is too much.",
                                 bill=bill.number, outstanding=bill.outstanding, amount=value),
                              {"amount": "too much"})
    account = session.get(PrepaidAccount, bill.account_id)
    funding = ledger.ensure_account(session, group_id, CHANNEL_ACCOUNT[channel],
                                    f"{CHANNEL_ACCOUNT[channel]}:{bill.property_id}", property_id=bill.property_id)
    transfer, _ = ledger.post_transfer(
        session, group_id, kind="bill_payment", key=key, request=request,
        legs=[(_receivable(session, account), value), (funding, -value)], amount=value, channel=channel,
        receipt_no=ledger.next_receipt_no(session, group_id), actor=actor, operator_id=operator_id,
        reason=stored(_l("Payment of bill %(bill)s", bill=bill.number)))
    session.add(BillPayment(group_id=group_id, bill_id=bill.id, transfer_id=transfer.id, amount=value, channel=channel))
    bill.paid += value
    if bill.paid == bill.total:
        bill.status, bill.paid_at = "paid", utcnow()
    elif bill.status != "overdue":
        bill.status = "partially_paid"
    session.flush()
    audit.record(session, group_id, "postpaid.bill.payment", actor=actor, operator_id=operator_id,
                 object_type="bill", object_id=bill.id, detail={"amount": str(value), "channel": channel,
                                                                "receipt_no": transfer.receipt_no})
    return bill


def remind(session: Session, bill: Bill, kind: str, day: date) -> bool:
    """Send one payment reminder for ``bill`` (at most once per kind and day); True when sent now."""
    stmt = pg_insert(BillReminder).values(group_id=bill.group_id, bill_id=bill.id, kind=kind, day=day,
                                          channel="portal", at=utcnow())
    if session.execute(stmt.on_conflict_do_nothing().returning(BillReminder.id)).scalar() is None:
        return False
    from ...alarms.models import PortalMessage

    title = (_l("Bill %(bill)s: ¥%(amount)s overdue", bill=bill.number, amount=bill.outstanding) if kind == "overdue"
             else _l("Bill %(bill)s: ¥%(amount)s due", bill=bill.number, amount=bill.outstanding))
    body = _l("Please pay ¥%(amount)s for %(start)s–%(end)s (due %(due)s).", amount=bill.outstanding,
              start=bill.period_start, end=bill.period_end, due=bill.due_date)
    session.add(PortalMessage(group_id=bill.group_id, account_id=bill.account_id, title=stored(title, 200),
                              body=stored(body)))
    bill.reminded_at = utcnow()
    return True


def mark_overdue(session: Session, today: date, group_id: int | None = None) -> list[int]:
    """Unpaid bills past their due date become overdue; each gets what its property's overdue policy says for
    today (``overdue``: reminders, late fee, cut-off); returns their ids."""
    from .overdue import cut_off, late_fee, policy_of, reminder_due

    stmt = select(Bill).where(Bill.status.in_(UNPAID), Bill.due_date < today).with_for_update(skip_locked=True)
    if group_id is not None:
        stmt = stmt.where(Bill.group_id == group_id)
    bills = session.execute(stmt).scalars().all()
    for bill in bills:
        if bill.status != "overdue":
            bill.status = "overdue"
            audit.record(session, bill.group_id, "postpaid.bill.overdue", actor="postpaid", object_type="bill",
                         object_id=bill.id, detail={"outstanding": str(bill.outstanding)})
        policy, days = policy_of(session, bill.property_id), (today - bill.due_date).days
        late_fee(session, bill, policy, today)
        if reminder_due(policy, days):
            remind(session, bill, "overdue", today)
        cut_off(session, bill, policy, days)
    return [b.id for b in bills]


def overdue_job() -> int:
    """Periodic job: overdue bills and reminders (every group; UTC+8 day boundary is close enough hourly)."""
    with service_session() as session:
        ids = mark_overdue(session, utcnow().date())
    log.info("post-paid: %d overdue bills reminded", len(ids))
    return len(ids)
