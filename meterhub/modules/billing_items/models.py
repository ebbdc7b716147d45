"""Billing-item tables: items, the accounts they apply to, and each due charge (created exactly once)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (BigInteger, Boolean, Date, DateTime, ForeignKey, Numeric, SmallInteger, String,
                        UniqueConstraint)
from sqlalchemy.orm import Mapped, mapped_column

from ...extensions import db
from ...models import TenantMixin, utcnow

CATEGORIES = ("property_fee", "rent", "service", "custom")
BASES = ("fixed", "per_m2")
RECURRENCES = ("once", "monthly", "quarterly", "yearly")
MODES = ("deduct", "bill")


class BillingItem(TenantMixin, db.Model):
    """A fee: ``rate`` is the amount (fixed) or CNY per m² of the account's room (per_m2)."""

    __tablename__ = "billing_items"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("properties.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    category: Mapped[str] = mapped_column(String(16), nullable=False, default="custom")
    basis: Mapped[str] = mapped_column(String(8), nullable=False, default="fixed")
    rate: Mapped[Decimal] = mapped_column(Numeric(12, 4), nullable=False)
    recurrence: Mapped[str] = mapped_column(String(10), nullable=False, default="monthly")
    day: Mapped[int] = mapped_column(SmallInteger, nullable=False, default=1)  # 1–31; past month end → last day
    anchor_month: Mapped[int] = mapped_column(SmallInteger, nullable=False, default=1)  # quarterly/yearly
    start_date: Mapped[date] = mapped_column(Date, nullable=False)
    end_date: Mapped[date | None] = mapped_column(Date)
    mode: Mapped[str] = mapped_column(String(8), nullable=False, default="deduct")
    may_trip: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class BillingItemAccount(TenantMixin, db.Model):
    """An account a billing item applies to."""

    __tablename__ = "billing_item_accounts"
    item_id: Mapped[int] = mapped_column(ForeignKey("billing_items.id", ondelete="CASCADE"), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("prepaid_accounts.id", ondelete="RESTRICT"), primary_key=True)


class BillingCharge(TenantMixin, db.Model):
    """One due occurrence of an item for one account: deducted, billed, or skipped (with the reason)."""

    __tablename__ = "billing_charges"
    __table_args__ = (UniqueConstraint("item_id", "account_id", "due_date"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("properties.id", ondelete="RESTRICT"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("billing_items.id", ondelete="RESTRICT"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("prepaid_accounts.id", ondelete="RESTRICT"), index=True)
    due_date: Mapped[date] = mapped_column(Date, nullable=False)
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2), nullable=False)
    status: Mapped[str] = mapped_column(String(10), nullable=False)  # deducted | billed | skipped
    reason: Mapped[str] = mapped_column(String(300), nullable=False, default="")
    transfer_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_transfers.id", ondelete="RESTRICT"))
    bill_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
