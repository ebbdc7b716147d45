"""What the cashier counter shows before anything is typed: today's takings (the cashier's own and the counter's,
per channel) and the latest receipts; and the balances of the accounts a search found."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.orm import Session

MONEY_IN = ("topup", "refund", "reversal")  # what a counter takes in and pays out


@dataclass
class Takings:
    """Money taken at the counter since local midnight: totals per channel, the operator's share."""

    total: Decimal = Decimal(0)
    count: int = 0
    mine: Decimal = Decimal(0)
    mine_count: int = 0
    by_channel: dict[str, Decimal] = field(default_factory=dict)


def _scope_sql(property_ids: list[int] | None) -> str:
    return "" if property_ids is None else " AND wa.property_id = ANY(:props)"


def takings_today(session: Session, tz: str, property_ids: list[int] | None, operator_id: int,
                  now: datetime | None = None) -> Takings:
    """Top-ups less refunds and reversals since local midnight in ``tz``, in the operator's properties."""
    zone = ZoneInfo(tz)
    local = (now or datetime.now(zone)).astimezone(zone)
    start = datetime.combine(local.date(), time.min, zone)
    rows = session.execute(text(
        "SELECT t.channel, t.operator_id = :op AS mine, sum(t.amount), count(*) FROM ledger_transfers t "
        "JOIN ledger_accounts wa ON wa.id = t.wallet_account_id WHERE t.kind = ANY(:kinds) "
        f"AND t.created_at >= :start AND t.created_at < :end{_scope_sql(property_ids)} GROUP BY 1, 2"),
        {"op": operator_id, "kinds": list(MONEY_IN), "start": start, "end": start + timedelta(days=1),
         "props": property_ids}).all()
    out = Takings()
    for channel, mine, amount, count in rows:
        out.total += amount
        out.count += count
        out.by_channel[channel or ""] = out.by_channel.get(channel or "", Decimal(0)) + amount
        if mine:
            out.mine += amount
            out.mine_count += count
    return out


def recent_receipts(session: Session, property_ids: list[int] | None, limit: int = 10) -> list[Any]:
    """The latest receipts of the counter's properties: transfer, account id, number and tenant."""
    return list(session.execute(text(
        "SELECT t.id, t.kind, t.amount, t.channel, t.receipt_no, t.actor, t.created_at, a.id AS account_id, "
        "a.number, a.customer_name FROM ledger_transfers t JOIN ledger_accounts wa ON wa.id = t.wallet_account_id "
        "JOIN prepaid_accounts a ON a.wallet_account_id = t.wallet_account_id "
        f"WHERE t.kind = ANY(:kinds) AND t.receipt_no IS NOT NULL{_scope_sql(property_ids)} "
        "ORDER BY t.id DESC LIMIT :limit"), {"kinds": list(MONEY_IN), "props": property_ids, "limit": limit}))


def balances(session: Session, wallet_ids: list[int]) -> dict[int, Decimal]:
    """Balances of these wallets (one query)."""
    if not wallet_ids:
        return {}
    return dict(session.execute(text("SELECT account_id, balance FROM ledger_balances WHERE account_id = ANY(:ids)"),
                                {"ids": wallet_ids}).tuples().all())
