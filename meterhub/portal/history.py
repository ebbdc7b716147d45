"""Every movement of a tenant's money, each with a one-line reason in the tenant's language (issue 21 item 7).

The history joins two sources: the ledger transfers on the account's wallet (top-ups, refunds, reversals,
public-area shares, billing items, bill payments, settlements — their stored reason is a message shown in the
reader's language, see :mod:`meterhub.i18n`) and the metered usage charges, summed per local day and utility (a
charge run posts one transfer for many accounts, so the account's own part comes from its charge rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..devices.models import Meter
from ..i18n import _l, shown
from ..labels import label
from ..ledger.models import Transfer
from ..modules.prepaid.models import Charge, PrepaidAccount
from ..tenants.models import Property

DAYS = 31
LIMIT = 60


@dataclass
class Movement:
    """One line of the history: when, what kind, the signed amount (wallet view), why."""

    at: datetime
    kind: str  # a transfer kind (labels family ``transfer_kind``)
    amount: Decimal
    reason: str


def _reason(transfer: Transfer) -> Any:
    """The stored reason as a message; a reason a person typed (refund, reversal) follows the kind's words."""
    text = shown(transfer.reason)
    if transfer.reason.startswith("i18n:"):
        return text
    if transfer.kind == "topup":
        return _l("Top-up (%(channel)s)", channel=label(transfer.channel, "channel")) if transfer.channel \
            else _l("Top-up")
    if transfer.kind == "refund":
        return _l("Refund: %(reason)s", reason=text) if text else _l("Refund")
    if transfer.kind == "reversal":
        return _l("Reversal of a wrong entry: %(reason)s", reason=text) if text else _l("Reversal of a wrong entry")
    if transfer.kind == "settlement":
        return _l("Account closed: the balance was settled")
    if transfer.kind == "charge":
        return _l("Usage up to the meter swap")
    if transfer.kind == "fee":
        return _l("Billing item: %(item)s", item=text) if text else _l("Billing item")
    if transfer.kind == "apportion":
        return _l("Public-area share: %(reason)s", reason=text) if text else _l("Public-area share")
    return text or label(transfer.kind, "transfer_kind")


def _usage_days(session: Session, account: PrepaidAccount, tz: ZoneInfo, since: datetime) -> list[Movement]:
    day = func.date(func.timezone(str(tz), Charge.interval_end - timedelta(seconds=1)))
    rows = session.execute(
        select(day, Meter.utility, func.sum(Charge.usage), func.sum(Charge.amount), func.max(Charge.interval_end))
        .join(Meter, Meter.id == Charge.meter_id)
        .where(Charge.account_id == account.id, Charge.interval_end > since)
        .group_by(day, Meter.utility)).all()
    out = []
    for local_day, utility, usage, amount, last in rows:
        if not amount:
            continue
        unit = "m³" if utility == "water" else "kWh"
        reason = (_l("Water used on %(day)s: %(usage)s %(unit)s", day=_day(local_day), usage=_qty(usage), unit=unit)
                  if utility == "water" else
                  _l("Electricity used on %(day)s: %(usage)s %(unit)s", day=_day(local_day), usage=_qty(usage),
                     unit=unit))
        out.append(Movement(last, "charge", -Decimal(amount), str(reason)))
    return out


def _day(value: date) -> str:
    return value.isoformat()


def _qty(value: Decimal) -> str:
    return f"{Decimal(value).quantize(Decimal('0.01'))}"


def history(session: Session, account: PrepaidAccount, *, days: int = DAYS, limit: int = LIMIT) -> list[Movement]:
    """The account's money movements of the last ``days`` days, newest first (at most ``limit``)."""
    prop = session.get(Property, account.property_id)
    tz = ZoneInfo(prop.timezone if prop else "Asia/Shanghai")
    since = datetime.combine(datetime.now(tz).date() - timedelta(days=days), time(), tz)
    moves = [Movement(t.created_at, t.kind, Decimal(t.amount), str(_reason(t))) for t in session.execute(
        select(Transfer).where(Transfer.wallet_account_id == account.wallet_account_id, Transfer.created_at >= since,
                               # a usage charge with charge rows is in the daily usage lines already
                               ~select(Charge.id).where(Charge.transfer_id == Transfer.id).exists())
        .order_by(Transfer.id.desc()).limit(limit)).scalars()]
    moves += _usage_days(session, account, tz, since)
    return sorted(moves, key=lambda m: m.at, reverse=True)[:limit]
