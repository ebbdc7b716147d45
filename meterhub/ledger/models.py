"""Double-entry ledger tables: accounts, trigger-maintained balances, transfers and entries.

Entries and transfers are append-only (the app role has INSERT/SELECT only; triggers refuse UPDATE,
DELETE and TRUNCATE for everyone). Amounts are signed: money moving into a customer wallet is positive
on the wallet and negative on the funding account (cash drawer, clearing); a charge is negative on the
wallet and positive on revenue. The entries of one transfer sum to zero (checked by a trigger).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, Numeric, String, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from ..db import current_group_id
from ..extensions import db
from ..models import TenantMixin, utcnow

ACCOUNT_KINDS = (
    "wallet",  # a customer's prepaid wallet (PrepaidAccount)
    "cash_drawer",  # cash taken at the counter
    "card_clearing",  # bank card (POS) payments not yet settled
    "transfer_clearing",  # bank transfers
    "online_clearing",  # online payment provider
    "revenue_electricity",
    "revenue_water",
    "refunds_payable",  # refunds owed back to customers (non-cash channels)
    "revenue_apportion",  # public-area shares (公摊), meterhub.modules.apportion
    "revenue_fees",  # billing items (收费项), meterhub.modules.billing_items
    "revenue_postpaid",  # post-paid bills (后付费), meterhub.modules.postpaid
    "receivable",  # what post-paid customers owe until they pay
    "charge_clearing",  # charges of one shard of a sharded charging run, swept to revenue after the run
)
CHANNEL_ACCOUNT = {
    "cash": "cash_drawer",
    "card": "card_clearing",
    "transfer": "transfer_clearing",
    "online": "online_clearing",
}
TRANSFER_KINDS = ("topup", "refund", "reversal", "charge", "settlement",  # prepaid core
                  "charge_sweep",  # charges clearing -> revenue after a sharded charging run
                  "apportion", "fee", "bill", "bill_payment")  # operations modules


class LedgerAccount(TenantMixin, db.Model):
    """One account of the ledger (a wallet, a drawer, a revenue account)."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (UniqueConstraint("group_id", "code"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    property_id: Mapped[int | None] = mapped_column(ForeignKey("properties.id", ondelete="RESTRICT"), index=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    code: Mapped[str] = mapped_column(String(100), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class LedgerBalance(TenantMixin, db.Model):
    """Cached balance of a ledger account, maintained only by the entry trigger (proved by checks)."""

    __tablename__ = "ledger_balances"
    account_id: Mapped[int] = mapped_column(
        ForeignKey("ledger_accounts.id", ondelete="RESTRICT"), primary_key=True
    )
    balance: Mapped[Decimal] = mapped_column(Numeric(14, 2), nullable=False, default=Decimal("0"))


class Transfer(TenantMixin, db.Model):
    """One money movement: a set of entries summing to zero, keyed by an idempotency key."""

    __tablename__ = "ledger_transfers"
    __table_args__ = (UniqueConstraint("group_id", "idempotency_key"),
                      Index("ix_ledger_transfers_money_in", "created_at",  # dashboards: money in by time
                            postgresql_where=text("kind IN ('topup', 'refund', 'reversal')")))
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    idempotency_key: Mapped[str] = mapped_column(String(200), nullable=False)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    reverses_transfer_id: Mapped[int | None] = mapped_column(
        ForeignKey("ledger_transfers.id", ondelete="RESTRICT"), unique=True
    )
    wallet_account_id: Mapped[int | None] = mapped_column(BigInteger, index=True)  # the customer side, if any
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2), nullable=False)  # signed, wallet perspective
    channel: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    receipt_no: Mapped[str | None] = mapped_column(String(40), unique=True)
    reason: Mapped[str] = mapped_column(String(300), nullable=False, default="")
    operator_id: Mapped[int | None] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(100), nullable=False, default="system")
    detail: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class Entry(TenantMixin, db.Model):
    """One signed amount on one ledger account; immutable.

    References are checked per statement by the ``ledger_entries_accounts_transfers_exist`` trigger (migration 0010), not by
    row-level foreign keys: ``(transfer_id, group_id)`` is a ``ledger_transfers`` row and ``(account_id,
    group_id)`` a ``ledger_accounts`` row; transfers are immutable and ledger accounts are never deleted or
    re-keyed (guard triggers).
    """

    __tablename__ = "ledger_entries"
    __table_args__ = (CheckConstraint("amount <> 0", name="nonzero"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    group_id: Mapped[int] = mapped_column(BigInteger, nullable=False, default=current_group_id)
    transfer_id: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    account_id: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
