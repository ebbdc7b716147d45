"""Post-paid as finance runs it (issue 21 item 4): a month's bills for a property or building in one run, with a
preview, from the console, the CLI (``meterhub bills run``) and a monthly schedule (``postpaid_policies.bill_day``).

    lines = bill_run(session, group_id, property_id, date(2026, 11, 1), preview=True, actor="amy")   # nothing kept
    lines = bill_run(session, group_id, property_id, date(2026, 11, 1), confirm=True, actor="amy")   # bills made

Each account is billed by :func:`service.generate_bill` inside a savepoint: a preview runs the very same code and
rolls every savepoint back, so what it shows is what the run makes. An account already billed for an overlapping
period, or whose bill cannot be made, is listed with the reason and the others go on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from ...db import service_session
from ...errors import MeterhubError, ValidationError
from ...i18n import _l
from ...models import utcnow
from ...tenants import audit
from ...tenants.models import Property, Room
from ..prepaid.models import PrepaidAccount
from . import service
from .models import Bill, BillLine, PostpaidAccount, PostpaidPolicy

log = logging.getLogger(__name__)


@dataclass
class RunLine:
    """One account of a run: the bill made (or that would be), or why none."""

    account_id: int
    number: str
    customer: str
    room: str
    total: Decimal | None = None
    lines: int = 0
    bill_id: int | None = None
    status: str = ""
    problem: str = ""


def month_of(value: str) -> date:
    """``2026-11`` → 1 November 2026; a clear error otherwise."""
    try:
        first = date.fromisoformat(f"{value.strip()}-01")
    except ValueError as err:
        raise ValidationError(_l("The month must be given as YYYY-MM, e.g. 2026-11."), {"month": "format"}) from err
    return first


def next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def run_accounts(session: Session, group_id: int, property_id: int, building_id: int | None = None
                 ) -> list[tuple[PrepaidAccount, str]]:
    """The post-paid accounts of the property (of one building of it), with their room number."""
    stmt = (select(PrepaidAccount, Room.number).join(PostpaidAccount, PostpaidAccount.account_id == PrepaidAccount.id)
            .outerjoin(Room, Room.id == PrepaidAccount.room_id)
            .where(PrepaidAccount.group_id == group_id, PrepaidAccount.property_id == property_id,
                   PrepaidAccount.status != "closed").order_by(Room.number, PrepaidAccount.number))
    if building_id is not None:
        stmt = stmt.where(Room.building_id == building_id)
    return [(account, room or "") for account, room in session.execute(stmt).all()]


def bill_run(session: Session, group_id: int, property_id: int, month: date, *, building_id: int | None = None,
             preview: bool = False, confirm: bool = False, actor: str, operator_id: int | None = None,
             today: date | None = None) -> list[RunLine]:
    """Bills of ``month`` for every post-paid account of the property (or building); with ``preview`` nothing is
    kept. The caller commits."""
    prop = session.get(Property, property_id)
    if prop is None or prop.group_id != group_id:
        raise ValidationError(_l("Choose a property."), {"property": "required"})
    first, end = month.replace(day=1), next_month(month.replace(day=1))
    result: list[RunLine] = []
    for account, room in run_accounts(session, group_id, property_id, building_id):
        line = RunLine(account.id, account.number, account.customer_name, room)
        existing = session.execute(select(Bill).where(Bill.account_id == account.id, Bill.status != "void",
                                                      Bill.period_start < end, Bill.period_end > first)).scalar()
        if existing is not None:
            line.bill_id, line.total, line.status = existing.id, existing.total, existing.status
            line.problem = str(_l("already billed: %(bill)s", bill=existing.number))
            result.append(line)
            continue
        savepoint = session.begin_nested()
        try:
            bill = service.generate_bill(session, group_id, account.id, first, end, actor=actor,
                                         operator_id=operator_id)
            if confirm:
                service.confirm_bill(session, group_id, bill.id, today=today, actor=actor, operator_id=operator_id)
            line.total, line.status = bill.total, bill.status
            line.lines = len(session.execute(select(BillLine.id).where(BillLine.bill_id == bill.id)).all())
            line.bill_id = None if preview else bill.id
        except MeterhubError as err:
            savepoint.rollback()
            line.problem = str(err)
            result.append(line)
            continue
        if preview:
            savepoint.rollback()
        else:
            savepoint.commit()
        result.append(line)
    if not preview:
        made = [r for r in result if r.bill_id and not r.problem]
        audit.record(session, group_id, "postpaid.run", actor=actor, operator_id=operator_id,
                     object_type="property", object_id=property_id,
                     detail={"month": first.isoformat()[:7], "building": building_id, "bills": len(made),
                             "confirmed": confirm, "total": str(sum((r.total or 0 for r in made), Decimal(0)))})
    return result


def scheduled_runs(session: Session, now: datetime | None = None) -> int:
    """The monthly schedule: on each property's ``bill_day`` (its local date), the previous month's bills, once."""
    now = now or utcnow()
    made = 0
    for policy in session.execute(select(PostpaidPolicy).where(PostpaidPolicy.bill_day.is_not(None))
                                  .with_for_update(skip_locked=True)).scalars().all():
        tz = session.get(Property, policy.property_id).timezone
        today = now.astimezone(ZoneInfo(tz)).date()
        previous = date(today.year - (today.month == 1), (today.month - 2) % 12 + 1, 1)
        if today.day < policy.bill_day or policy.last_run_month == previous:
            continue
        lines = bill_run(session, policy.group_id, policy.property_id, previous, confirm=policy.confirm_on_run,
                         actor="postpaid.schedule", today=today)
        policy.last_run_month = previous
        made += sum(1 for r in lines if r.bill_id and not r.problem)
    return made


def scheduled_runs_job() -> int:
    """Periodic job (every group, service role)."""
    with service_session() as session:
        made = scheduled_runs(session)
    log.info("post-paid schedule: %d bills made", made)
    return made


def run_command_impl(property_id: int, month: str, building_id: int | None, preview: bool, confirm: bool) -> str:
    """``meterhub bills-run``: the run as the service role; the table it prints."""
    first = month_of(month)
    with service_session() as session:
        prop = session.get(Property, property_id)
        if prop is None:
            raise ValidationError(f"property {property_id} does not exist", {"property": "unknown"})
        name = prop.name
        lines = bill_run(session, prop.group_id, prop.id, first, building_id=building_id, preview=preview,
                         confirm=confirm, actor="cli")
        if preview:
            session.rollback()
    head = f"{name} {first.isoformat()[:7]}: {'preview, nothing made' if preview else 'bills made'}"
    rows = [f"{r.room:<10} {r.number:<14} {r.customer[:20]:<20} {'' if r.total is None else r.total:>12} "
            f"{r.status:<10} {r.problem}" for r in lines]
    return "\n".join([head, *rows])
