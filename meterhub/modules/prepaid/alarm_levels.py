"""An account's low-balance alarm levels, in money and in days of money left (报警1 / 报警2).

A level in days (``alarm1_days``, ``alarm2_days``) is reached when the account's forecast says the money runs
out within that many days (:mod:`.forecast_store`); an account reaches a level by money or by days, whichever
comes first. Empty means "money only".
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from sqlalchemy.orm import Session

from ...errors import ValidationError
from ...i18n import _l
from ...ledger.money import parse_amount
from ...tenants import audit
from .control import evaluate_accounts
from .models import PrepaidAccount

MAX_DAYS = Decimal("365")


def parse_days(raw: object, field: str) -> Decimal | None:
    """Days as a number with one decimal, 0 < days ≤ 365; empty → None."""
    text = str(raw if raw is not None else "").strip()
    if not text:
        return None
    try:
        days = Decimal(text)
    except InvalidOperation as err:
        raise ValidationError(_l("%(value)s is not a number of days.", value=repr(text)), {field: "not a number"}) from err
    if not days.is_finite() or days <= 0 or days > MAX_DAYS or days != days.quantize(Decimal("0.1")):
        raise ValidationError(_l("Days must be above 0 and at most %(max)s, with one decimal at most.", max=MAX_DAYS),
                              {field: "out of range"})
    return days


def set_alarm_levels(session: Session, account: PrepaidAccount, *, alarm1: object, alarm2: object,
                     alarm1_days: object = "", alarm2_days: object = "", actor: str,
                     operator_id: int | None = None) -> None:
    """Change the account's alarm levels (validated, audited) and apply them to its balance at once."""
    a1, a2 = parse_amount(alarm1, "alarm1", positive=False), parse_amount(alarm2, "alarm2", positive=False)
    d1, d2 = parse_days(alarm1_days, "alarm1_days"), parse_days(alarm2_days, "alarm2_days")
    if a1 < 0 or a2 < 0 or a2 > a1:
        raise ValidationError(_l("Alarm level 2 must be at most alarm level 1, both 0 or more."), {"alarm2": "order"})
    if d1 is not None and d2 is not None and d2 > d1:
        raise ValidationError(_l("Alarm level 2 in days must be at most alarm level 1 in days."),
                              {"alarm2_days": "order"})
    before = {k: str(getattr(account, k)) for k in ("alarm1", "alarm2", "alarm1_days", "alarm2_days")}
    account.alarm1, account.alarm2, account.alarm1_days, account.alarm2_days = a1, a2, d1, d2
    audit.record(session, account.group_id, "prepaid.account.alarm_levels", actor=actor, operator_id=operator_id,
                 object_type="prepaid_account", object_id=account.id,
                 detail={"before": before, "after": {"alarm1": str(a1), "alarm2": str(a2), "alarm1_days": str(d1),
                                                     "alarm2_days": str(d2)}})
    if account.status == "open":
        evaluate_accounts(session, [account.id], actor=actor)
