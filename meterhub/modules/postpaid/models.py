"""Post-paid tables: which accounts are post-paid, bills and their lines, payments and reminders."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger, Boolean, Date, DateTime, ForeignKey, Index, Integer, Numeric, String, UniqueConstraint, text, true,
)
from sqlalchemy.orm import Mapped, mapped_column

from ...extensions import db
from ...models import TenantMixin, utcnow

BILL_STATUSES = ("draft", "confirmed", "partially_paid", "paid", "overdue", "void")
UNPAID = ("confirmed", "partially_paid", "overdue")
MONEY = Numeric(14, 2)


class PostpaidAccount(TenantMixin, db.Model):
    """Marks a customer account as post-paid: its usage is billed per period, not charged in real time."""

    __tablename__ = "postpaid_accounts"
    account_id: Mapped[int] = mapped_column(ForeignKey("prepaid_accounts.id", ondelete="RESTRICT"), primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("properties.id", ondelete="RESTRICT"), index=True)
    due_days: Mapped[int] = mapped_column(Integer, nullable=False, default=15)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class Bill(TenantMixin, db.Model):
    """One account's bill for one period: draft → confirmed → paid / partially paid / overdue (or void)."""

    __tablename__ = "postpaid_bills"
    __table_args__ = (UniqueConstraint("group_id", "number"),
                      Index("ux_postpaid_bills_period", "account_id", "period_start", "period_end", unique=True,
                            postgresql_where=text("status <> 'void'")))
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("properties.id", ondelete="RESTRICT"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("prepaid_accounts.id", ondelete="RESTRICT"), index=True)
    number: Mapped[str] = mapped_column(String(40), nullable=False)
    period_start: Mapped[date] = mapped_column(Date, nullable=False)
    period_end: Mapped[date] = mapped_column(Date, nullable=False)  # exclusive
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="draft")
    total: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal("0"))
    paid: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal("0"))
    due_date: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reminded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    @property
    def outstanding(self) -> Decimal:
        return self.total - self.paid


class BillLine(TenantMixin, db.Model):
    """One line of a bill: metered usage, an apportioned share or a billing item."""

    __tablename__ = "postpaid_bill_lines"
    __table_args__ = (Index("ux_postpaid_late_fee_day", "bill_id", "fee_day", unique=True,
                            postgresql_where=text("fee_day IS NOT NULL")),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    bill_id: Mapped[int] = mapped_column(ForeignKey("postpaid_bills.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(12), nullable=False)  # usage | apportion | item | late_fee
    description: Mapped[str] = mapped_column(String(300), nullable=False)
    quantity: Mapped[Decimal | None] = mapped_column(Numeric(18, 4))
    amount: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    source_id: Mapped[int | None] = mapped_column(BigInteger)
    fee_day: Mapped[date | None] = mapped_column(Date)  # a late fee's day (one per bill and day)


class BillPayment(TenantMixin, db.Model):
    """A payment against a bill (the money is the ledger transfer)."""

    __tablename__ = "postpaid_payments"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    bill_id: Mapped[int] = mapped_column(ForeignKey("postpaid_bills.id", ondelete="RESTRICT"), index=True)
    transfer_id: Mapped[int] = mapped_column(ForeignKey("ledger_transfers.id", ondelete="RESTRICT"), unique=True)
    amount: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    channel: Mapped[str] = mapped_column(String(16), nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class BillReminder(TenantMixin, db.Model):
    """A payment reminder sent for a bill (at most one per bill and kind and day)."""

    __tablename__ = "postpaid_reminders"
    __table_args__ = (UniqueConstraint("bill_id", "kind", "day"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    bill_id: Mapped[int] = mapped_column(ForeignKey("postpaid_bills.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(12), nullable=False)  # due | overdue | item
    day: Mapped[date] = mapped_column(Date, nullable=False)
    channel: Mapped[str] = mapped_column(String(16), nullable=False, default="portal")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class PostpaidPolicy(TenantMixin, db.Model):
    """How finance runs post-paid in one property: the monthly bill run and the overdue policy."""

    __tablename__ = "postpaid_policies"
    property_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("properties.id", ondelete="CASCADE"),
                                             primary_key=True)
    bill_day: Mapped[int | None] = mapped_column(Integer)  # 1–28: the previous month's bills are made that day
    confirm_on_run: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True, server_default=true())
    remind_every_days: Mapped[int] = mapped_column(Integer, nullable=False, default=3, server_default="3")
    late_fee_daily_rate: Mapped[Decimal] = mapped_column(Numeric(8, 6), nullable=False, default=Decimal(0),
                                                         server_default="0")
    late_fee_cap_rate: Mapped[Decimal] = mapped_column(Numeric(8, 6), nullable=False, default=Decimal(0),
                                                       server_default="0")
    cutoff_days: Mapped[int | None] = mapped_column(Integer)  # switch off after N days overdue (None: never)
    last_run_month: Mapped[date | None] = mapped_column(Date)  # the month the schedule last billed
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow,
                                                 server_default=text("now()"))
