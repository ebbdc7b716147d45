"""Creating billing items and charging what fell due, exactly once per item, account and due date.

The periodic job :func:`charge_due_job` walks every active item (row-locked, so two workers never take the
same item), computes its due dates up to today in the property's time zone and creates each missing
:class:`BillingCharge`. The unique (item, account, due date) row and the ledger idempotency key
``fee:<item>:<due date>:<account>`` both make a second creation impossible.

Deduct items take the amount from the prepaid wallet. With ``may_trip`` the control loop then decides the
relay (a fee may trip power); without it a fee that would push the balance to the trip line is billed
instead (a payment reminder). Post-paid accounts and ``bill`` items always go to the next bill.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from ...db import service_session
from ...errors import ValidationError
from ...i18n import _l, joined, stored
from ...ledger import post as ledger
from ...ledger.money import round_money
from ...models import utcnow
from ...tenants import audit
from ...tenants.models import Property, Room
from ..postpaid.models import PostpaidAccount
from ..prepaid.control import evaluate_accounts
from ..prepaid.models import PrepaidAccount
from .models import BASES, CATEGORIES, MODES, RECURRENCES, BillingCharge, BillingItem, BillingItemAccount
from .schedule import due_dates

log = logging.getLogger(__name__)


def create_item(session: Session, group_id: int, property_id: int, *, name: str, rate: object, basis: str = "fixed",
                category: str = "custom", recurrence: str = "monthly", day: int = 1, anchor_month: int = 1,
                start_date: date, end_date: date | None = None, mode: str = "deduct", may_trip: bool = False,
                account_ids: Sequence[int], actor: str, operator_id: int | None = None) -> BillingItem:
    """A new billing item for accounts of one property."""
    errors: dict[str, str] = {}
    messages: dict[str, object] = {}  # what to fix beside each field, in the reader's language
    problems = joined()  # the same, all in one message

    def refuse(field: str, code: str, message: object) -> None:
        errors[field] = code
        messages.setdefault(field, message)
        problems.append(message)

    try:
        value = Decimal(str(rate))
        if not value.is_finite() or value < 0 or value != value.quantize(Decimal("0.0001")):
            refuse("rate", "invalid", _l("The rate must be a number ≥ 0 with at most 4 decimals."))
    except InvalidOperation:
        value = Decimal(0)
        refuse("rate", "not a number", _l("The rate must be a number."))
    for field, choice, allowed in (("basis", basis, BASES), ("category", category, CATEGORIES),
                                   ("recurrence", recurrence, RECURRENCES), ("mode", mode, MODES)):
        if choice not in allowed:
            refuse(field, "unknown", _l("Choose one of the offered values for %(field)s.", field=field))
    if not 1 <= int(day) <= 31 or not 1 <= int(anchor_month) <= 12:
        refuse("day", "range", _l("The day must be 1–31 and the month 1–12."))
    if not name.strip():
        refuse("name", "required", _l("Give the billing item a name."))
    if end_date is not None and end_date < start_date:
        refuse("end_date", "order", _l("The end date is before the start date."))
    found = set(session.execute(select(PrepaidAccount.id).where(
        PrepaidAccount.id.in_(list(account_ids)), PrepaidAccount.group_id == group_id,
        PrepaidAccount.property_id == property_id)).scalars())
    if not account_ids or found != set(account_ids):
        refuse("accounts", "invalid", _l("Add one or more accounts of this property."))
    if errors:
        raise ValidationError(joined(_l("The billing item cannot be saved:"), problems, sep=" "), errors, messages)
    item = BillingItem(group_id=group_id, property_id=property_id, name=name.strip(), category=category, basis=basis,
                       rate=value, recurrence=recurrence, day=int(day), anchor_month=int(anchor_month),
                       start_date=start_date, end_date=end_date, mode=mode, may_trip=may_trip)
    session.add(item)
    session.flush()
    session.add_all(BillingItemAccount(group_id=group_id, item_id=item.id, account_id=a) for a in sorted(found))
    session.flush()
    audit.record(session, group_id, "billing_item.create", actor=actor, operator_id=operator_id,
                 object_type="billing_item", object_id=item.id,
                 detail={"name": item.name, "rate": str(value), "basis": basis, "recurrence": recurrence,
                         "day": day, "mode": mode, "may_trip": may_trip, "accounts": sorted(found)})
    return item


def item_amount(session: Session, item: BillingItem, account: PrepaidAccount) -> tuple[Decimal, str]:
    """The amount due for ``account`` (fixed, or rate × its room's m²) and, when it cannot be charged, why."""
    if item.basis == "fixed":
        return round_money(Decimal(item.rate)), ""
    room = session.get(Room, account.room_id) if account.room_id else None
    if room is None:
        return Decimal(0), f"account {account.number} has no room, so no area to charge per m²"
    return round_money(Decimal(item.rate) * Decimal(room.area_m2)), ""


def _charge_one(session: Session, item: BillingItem, account: PrepaidAccount, due: date, postpaid: bool,
                revenue: int) -> BillingCharge:
    amount, why = item_amount(session, item, account)
    charge = BillingCharge(group_id=item.group_id, property_id=item.property_id, item_id=item.id,
                           account_id=account.id, due_date=due, amount=amount, status="skipped", reason=why)
    if why or not amount:
        charge.reason = why or "amount is 0"
    elif account.status != "open" and not postpaid:
        charge.reason = f"account {account.number} is {account.status}"
    elif postpaid or item.mode == "bill":
        charge.status, charge.reason = "billed", "post-paid account" if postpaid else "billed item"
    else:
        ledger.lock_accounts(session, [account.wallet_account_id])
        balance = ledger.balance_of(session, account.wallet_account_id)
        if not item.may_trip and balance - amount <= -account.overdraft_limit:
            charge.status, charge.reason = "billed", f"balance {balance} too low to deduct without tripping"
        else:
            transfer, _ = ledger.post_transfer(
                session, item.group_id, kind="fee", key=f"fee:{item.id}:{due.isoformat()}:{account.id}",
                request={"op": "fee", "item": item.id, "due": due.isoformat(), "account": account.id,
                         "amount": str(amount)},
                legs=[(account.wallet_account_id, -amount), (revenue, amount)],
                wallet_account_id=account.wallet_account_id, amount=-amount, actor="billing_items",
                reason=stored(_l("%(item)s due %(date)s", item=item.name, date=due), 300))
            charge.status, charge.transfer_id = "deducted", transfer.id
    session.add(charge)
    return charge


def charge_item(session: Session, item: BillingItem, today: date) -> list[BillingCharge]:
    """Create the item's missing charges due up to ``today`` (caller holds the item's row lock)."""
    accounts = list(session.execute(select(PrepaidAccount).join(
        BillingItemAccount, BillingItemAccount.account_id == PrepaidAccount.id)
        .where(BillingItemAccount.item_id == item.id).order_by(PrepaidAccount.id)).scalars())
    dates = list(due_dates(item.recurrence, item.day, item.anchor_month, item.start_date, today, item.end_date))
    if not accounts or not dates:
        return []
    done = set(session.execute(select(BillingCharge.account_id, BillingCharge.due_date)
                               .where(BillingCharge.item_id == item.id)).tuples())
    postpaid = set(session.execute(select(PostpaidAccount.account_id).where(
        PostpaidAccount.account_id.in_([a.id for a in accounts]))).scalars())
    revenue = ledger.ensure_account(session, item.group_id, "revenue_fees", f"revenue_fees:{item.property_id}",
                                    property_id=item.property_id)
    created = [_charge_one(session, item, account, due, account.id in postpaid, revenue)
               for due in dates for account in accounts if (account.id, due) not in done]
    session.flush()
    if created:
        audit.record(session, item.group_id, "billing_item.charged", actor="billing_items",
                     object_type="billing_item", object_id=item.id,
                     detail={"charges": len(created), "through": today.isoformat(),
                             "deducted": sum(1 for c in created if c.status == "deducted")})
        evaluate_accounts(session, sorted({c.account_id for c in created if c.status == "deducted"}),
                          actor="billing_items")
    return created


def charge_due(session: Session, now: datetime | None = None, group_id: int | None = None) -> int:
    """Charge every active item due up to today (local date of its property); returns charges created."""
    now = now or utcnow()
    stmt = select(BillingItem).where(BillingItem.active).order_by(BillingItem.id).with_for_update(skip_locked=True)
    if group_id is not None:
        stmt = stmt.where(BillingItem.group_id == group_id)
    created = 0
    for item in session.execute(stmt).scalars().all():
        tz = session.get(Property, item.property_id).timezone
        created += len(charge_item(session, item, now.astimezone(ZoneInfo(tz)).date()))
    return created


def charge_now(session: Session, item_id: int, *, actor: str, operator_id: int | None = None,
               now: datetime | None = None) -> list[BillingCharge]:
    """"Charge now": create the item's charges due up to today at once, not at the hourly job (row-locked, so
    the job and a second click never charge twice); the caller commits. Returns the charges created."""
    item = session.execute(select(BillingItem).where(BillingItem.id == item_id).with_for_update()).scalar_one()
    if not item.active:
        raise ValidationError(_l("Billing item %(item)s is not active; nothing to charge.", item=item.name),
                              {"item": "inactive"})
    today = (now or utcnow()).astimezone(ZoneInfo(session.get(Property, item.property_id).timezone)).date()
    created = charge_item(session, item, today)
    audit.record(session, item.group_id, "billing_item.charge_now", actor=actor, operator_id=operator_id,
                 object_type="billing_item", object_id=item.id,
                 detail={"through": today.isoformat(), "charges": len(created)})
    return created


def charge_due_job() -> int:
    """Periodic job (every group, service role)."""
    with service_session() as session:
        created = charge_due(session)
    log.info("billing items: %d charges created", created)
    return created
