"""Posting an apportioning statement (deduct or bill each share) and reversing a posted run.

Each deducted share is one ledger transfer keyed ``apportion:<rule>:<start>-<end>:<account>`` (plus
``:c<n>`` for the n-th correction after a reversal), so a retried post never deducts twice. A posted
period (or one overlapping it) cannot be posted again: reverse it first, then post the correction.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ...errors import NotFound, ValidationError
from ...i18n import _l, stored
from ...ledger import post as ledger
from ...ledger.models import Entry
from ...models import utcnow
from ...tenants import audit
from ..postpaid.models import PostpaidAccount
from ..prepaid.control import evaluate_accounts
from ..prepaid.models import PrepaidAccount
from .models import ApportionRule, ApportionRun, ApportionShare
from .statement import Statement, compute

log = logging.getLogger(__name__)


class AlreadyPosted(ValidationError):
    """The period (or an overlapping one) of the rule is already posted."""


def share_key(rule_id: int, start: datetime, end: datetime, account_id: int, correction: int) -> str:
    """The idempotency key of one account's deducted share."""
    key = f"apportion:{rule_id}:{start:%Y%m%d%H}-{end:%Y%m%d%H}:{account_id}"
    return f"{key}:c{correction}" if correction else key


def _dispositions(session: Session, rule: ApportionRule, statement: Statement) -> None:
    ids = [ln.account_id for ln in statement.lines]
    postpaid = set(session.execute(select(PostpaidAccount.account_id)
                                   .where(PostpaidAccount.account_id.in_(ids))).scalars())
    for line in statement.lines:
        account = session.get(PrepaidAccount, line.account_id)
        if rule.post_mode == "bill" or line.account_id in postpaid:
            line.disposition = "billed"
        elif account.status != "open":
            line.disposition = "billed"
            line.why.append(_l("account not open: billed instead of deducted"))
        else:
            line.disposition = "deducted"


def post_run(session: Session, group_id: int, rule_id: int, start: datetime, end: datetime, *, actor: str,
             operator_id: int | None = None) -> ApportionRun:
    """Compute and post the period: one run, its shares, a ledger transfer per deducted share."""
    rule = session.execute(select(ApportionRule).where(ApportionRule.id == rule_id, ApportionRule.group_id == group_id)
                           .with_for_update()).scalar()
    if rule is None:
        raise NotFound(_l("Apportioning rule %(rule)s not found.", rule=rule_id))
    clash = session.execute(select(ApportionRun).where(
        ApportionRun.rule_id == rule.id, ApportionRun.status == "posted",
        ApportionRun.period_start < end, ApportionRun.period_end > start)).scalar()
    if clash is not None:
        raise AlreadyPosted(_l("The rule %(rule)s is already posted for %(start)s–%(end)s (run %(run)s); reverse "
                               "that run to correct it.", rule=rule.name, start=clash.period_start.date(),
                               end=clash.period_end.date(), run=clash.id),
                            {"period": "already posted"})
    statement = compute(session, group_id, rule.id, start, end)
    _dispositions(session, rule, statement)
    correction = session.execute(select(func.count()).select_from(ApportionRun).where(
        ApportionRun.rule_id == rule.id, ApportionRun.period_start == start, ApportionRun.period_end == end)).scalar_one()
    run = ApportionRun(group_id=group_id, property_id=rule.property_id, rule_id=rule.id, period_start=start,
                       period_end=end, correction=correction, status="posted", usage=statement.usage,
                       amount=statement.amount, statement=statement.as_json(), actor=actor)
    session.add(run)
    session.flush()
    revenue = ledger.ensure_account(session, group_id, "revenue_apportion", f"revenue_apportion:{rule.property_id}",
                                    property_id=rule.property_id)
    debited = []
    for line in statement.lines:
        if not line.amount:
            continue
        transfer_id = None
        if line.disposition == "deducted":
            account = session.get(PrepaidAccount, line.account_id)
            ledger.lock_accounts(session, [account.wallet_account_id])
            key = share_key(rule.id, start, end, account.id, correction)
            transfer, _ = ledger.post_transfer(
                session, group_id, kind="apportion", key=key,
                request={"op": "apportion", "run": run.id, "account": account.id, "amount": str(line.amount)},
                legs=[(account.wallet_account_id, -line.amount), (revenue, line.amount)],
                wallet_account_id=account.wallet_account_id, amount=-line.amount, actor=actor,
                operator_id=operator_id, reason=stored(_l("Public-area share (%(rule)s) %(start)s–%(end)s: %(basis)s",
                                                          rule=rule.name, start=start.date(),
                                                          end=(end - timedelta(seconds=1)).date(),
                                                          basis=line.why.parts[0]), 300))
            transfer_id = transfer.id
            debited.append(account.id)
        session.add(ApportionShare(group_id=group_id, run_id=run.id, account_id=line.account_id, weight=line.weight,
                                   amount=line.amount, disposition=line.disposition, transfer_id=transfer_id,
                                   note=stored(line.why, 300)))
    session.flush()
    audit.record(session, group_id, "apportion.post", actor=actor, operator_id=operator_id, object_type="apportion_run",
                 object_id=run.id, detail={"rule": rule.id, "start": start.isoformat(), "end": end.isoformat(),
                                           "amount": str(statement.amount), "correction": correction})
    evaluate_accounts(session, debited, actor=actor)  # the control loop may trip a debited account
    log.info("apportioning rule %s posted %s for %s–%s", rule.id, statement.amount, start, end)
    return run


def reverse_run(session: Session, group_id: int, run_id: int, reason: str, *, actor: str,
                operator_id: int | None = None) -> ApportionRun:
    """Undo a posted run: opposite transfers for deducted shares; billed shares must not be on a bill yet."""
    if not reason.strip():
        raise ValidationError(_l("A reversal needs a reason."), {"reason": "required"})
    run = session.execute(select(ApportionRun).where(ApportionRun.id == run_id, ApportionRun.group_id == group_id)
                          .with_for_update()).scalar()
    if run is None:
        raise NotFound(_l("Apportioning run %(run)s not found.", run=run_id))
    if run.status != "posted":
        raise ValidationError(_l("Run %(run)s is already reversed; only a posted run can be reversed.", run=run.id),
                              {"status": "state"})
    shares = list(session.execute(select(ApportionShare).where(ApportionShare.run_id == run.id)).scalars())
    if billed := [s.account_id for s in shares if s.bill_id is not None]:
        raise ValidationError(_l("Shares of accounts %(accounts)s are already on bills; void those bills first.",
                                 accounts=", ".join(a.number for a in session.execute(select(PrepaidAccount).where(
                                     PrepaidAccount.id.in_(billed))).scalars())),
                              {"bills": "billed"})
    touched = []
    for share in shares:
        if share.transfer_id is not None:
            legs = [(e.account_id, -e.amount) for e in session.execute(
                select(Entry).where(Entry.transfer_id == share.transfer_id).order_by(Entry.id)).scalars()]
            account = session.get(PrepaidAccount, share.account_id)
            ledger.lock_accounts(session, [account.wallet_account_id])
            ledger.post_transfer(session, group_id, kind="reversal", key=f"apportion-reversal:{share.transfer_id}",
                                 request={"op": "apportion-reversal", "transfer": share.transfer_id}, legs=legs,
                                 wallet_account_id=account.wallet_account_id, amount=share.amount,
                                 reverses_transfer_id=share.transfer_id, actor=actor,
                                 reason=stored(_l("Public-area share reversed: %(reason)s", reason=reason.strip()), 300),
                                 operator_id=operator_id)
            touched.append(account.id)
        share.disposition = "reversed"
    run.status, run.reversed_at, run.reversal_reason = "reversed", utcnow(), reason.strip()[:300]
    session.flush()
    audit.record(session, group_id, "apportion.reverse", actor=actor, operator_id=operator_id,
                 object_type="apportion_run", object_id=run.id, detail={"reason": reason.strip()})
    evaluate_accounts(session, touched, actor=actor)
    return run
