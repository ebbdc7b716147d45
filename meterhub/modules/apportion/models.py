"""Apportioning tables: rules with sub-meters and members, posted runs and each account's share."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, Numeric, String, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from ...extensions import db
from ...models import TenantMixin, utcnow

METHODS = ("ratio", "area", "usage")
POST_MODES = ("deduct", "bill")
MONEY = Numeric(14, 2)
USAGE = Numeric(18, 4)


class ApportionRule(TenantMixin, db.Model):
    """A parent meter (总表) whose usage (optionally minus its sub-meters, 分表) is shared by accounts."""

    __tablename__ = "apportion_rules"
    __table_args__ = (UniqueConstraint("group_id", "name"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("properties.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    parent_meter_id: Mapped[int] = mapped_column(ForeignKey("meters.id", ondelete="RESTRICT"))
    subtract_sub_meters: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    method: Mapped[str] = mapped_column(String(8), nullable=False)
    tariff_id: Mapped[int] = mapped_column(ForeignKey("tariffs.id", ondelete="RESTRICT"))
    post_mode: Mapped[str] = mapped_column(String(8), nullable=False, default="deduct")
    remainder_account_id: Mapped[int | None] = mapped_column(ForeignKey("prepaid_accounts.id", ondelete="SET NULL"))
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class ApportionSubMeter(TenantMixin, db.Model):
    """A sub-meter (分表) under a rule's parent meter."""

    __tablename__ = "apportion_sub_meters"
    rule_id: Mapped[int] = mapped_column(ForeignKey("apportion_rules.id", ondelete="CASCADE"), primary_key=True)
    meter_id: Mapped[int] = mapped_column(ForeignKey("meters.id", ondelete="RESTRICT"), primary_key=True)


class ApportionMember(TenantMixin, db.Model):
    """An account sharing a rule's amount; ``ratio`` is its weight for the ratio method."""

    __tablename__ = "apportion_members"
    __table_args__ = (UniqueConstraint("rule_id", "account_id"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("apportion_rules.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("prepaid_accounts.id", ondelete="RESTRICT"), index=True)
    ratio: Mapped[Decimal] = mapped_column(Numeric(12, 4), nullable=False, default=Decimal("1"))


class ApportionRun(TenantMixin, db.Model):
    """A posted period of a rule with its statement; reversed runs stay as history (a correction is new)."""

    __tablename__ = "apportion_runs"
    __table_args__ = (
        Index("ux_apportion_runs_posted", "rule_id", "period_start", "period_end", unique=True,
              postgresql_where=text("status = 'posted'")),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("properties.id", ondelete="RESTRICT"), index=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("apportion_rules.id", ondelete="RESTRICT"), index=True)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    correction: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    status: Mapped[str] = mapped_column(String(10), nullable=False, default="posted")
    usage: Mapped[Decimal] = mapped_column(USAGE, nullable=False)
    amount: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    statement: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict)
    actor: Mapped[str] = mapped_column(String(100), nullable=False, default="system")
    posted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    reversed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reversal_reason: Mapped[str] = mapped_column(String(300), nullable=False, default="")


class ApportionShare(TenantMixin, db.Model):
    """What one account pays in one run: deducted from its wallet or billed (post-paid / closed)."""

    __tablename__ = "apportion_shares"
    __table_args__ = (UniqueConstraint("run_id", "account_id"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("apportion_runs.id", ondelete="RESTRICT"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("prepaid_accounts.id", ondelete="RESTRICT"), index=True)
    weight: Mapped[Decimal] = mapped_column(Numeric, nullable=False)
    amount: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    disposition: Mapped[str] = mapped_column(String(10), nullable=False)  # deducted | billed | reversed
    transfer_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_transfers.id", ondelete="RESTRICT"))
    bill_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    note: Mapped[str] = mapped_column(String(300), nullable=False, default="")
