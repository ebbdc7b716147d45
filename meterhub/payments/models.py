"""Payment tables: a group's provider channels, orders, every callback received, and the sandbox
provider's own trade records (what a real provider would keep on its side)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Numeric, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from ..models import TenantMixin, utcnow

ORDER_STATES = ("created", "paid", "expired", "disputed", "unapplied")
#: What became of a callback: accepted/duplicate/late are answered 200, the others 4xx.
OUTCOMES = ("accepted", "duplicate", "late", "unapplied", "forged", "replay", "stale", "mismatch",
            "unknown_order", "invalid")


class PaymentChannel(TenantMixin, db.Model):
    """A group's configured payment provider (merchant settings and encrypted secrets)."""

    __tablename__ = "payment_channels"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    provider: Mapped[str] = mapped_column(String(32), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    notify_key: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    settings: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict)
    secrets: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class PaymentOrder(TenantMixin, db.Model):
    """One online top-up order of an account, paid at most once."""

    __tablename__ = "payment_orders"
    __table_args__ = (UniqueConstraint("channel_id", "provider_txn_id"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("properties.id", ondelete="RESTRICT"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("prepaid_accounts.id", ondelete="RESTRICT"), index=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("payment_channels.id", ondelete="RESTRICT"), index=True)
    out_trade_no: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False, default="CNY")
    state: Mapped[str] = mapped_column(String(12), nullable=False, default="created")
    provider_txn_id: Mapped[str | None] = mapped_column(String(64))
    transfer_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_transfers.id", ondelete="RESTRICT"))
    portal_user_id: Mapped[int | None] = mapped_column(BigInteger)
    pay_url: Mapped[str] = mapped_column(Text, nullable=False, default="")
    detail: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PaymentNotification(TenantMixin, db.Model):
    """One callback as received and what we did with it (append-only)."""

    __tablename__ = "payment_notifications"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("payment_channels.id", ondelete="CASCADE"), index=True)
    order_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    provider_txn_id: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    message: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    body_sha256: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    remote_addr: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class SandboxTrade(TenantMixin, db.Model):
    """The sandbox provider's record of a payment (its side of reconciliation)."""

    __tablename__ = "payment_sandbox_trades"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("payment_channels.id", ondelete="CASCADE"), index=True)
    txn_id: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    out_trade_no: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False, default="CNY")
    state: Mapped[str] = mapped_column(String(12), nullable=False, default="SUCCESS")
    paid_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
