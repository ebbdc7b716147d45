"""Prepaid tables: customer accounts, the meter/charging state, charges (append-only) and events."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (BigInteger, Boolean, CheckConstraint, Date, DateTime, ForeignKey, Index, Integer, Numeric,
                        SmallInteger, String, UniqueConstraint, func, text)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from ...db import current_group_id
from ...extensions import db
from ...models import TenantMixin, utcnow

ACCOUNT_STATUSES = ("preset", "open", "closed")
LEVELS = {0: "normal", 1: "alarm1", 2: "alarm2", 3: "arrears"}
USAGE = Numeric(18, 4)
MONEY = Numeric(14, 2)


class PrepaidAccount(TenantMixin, db.Model):
    """A customer's prepaid account (户): one wallet over one or several meters (一户多表)."""

    __tablename__ = "prepaid_accounts"
    __table_args__ = (UniqueConstraint("group_id", "number"),
                      CheckConstraint("(alarm1_days IS NULL OR alarm1_days > 0) AND (alarm2_days IS NULL OR "
                                      "alarm2_days > 0) AND (alarm1_days IS NULL OR alarm2_days IS NULL OR "
                                      "alarm2_days <= alarm1_days)", name="alarm_days"),
                      Index("ix_prepaid_accounts_level", "property_id", "alarm_level",
                            postgresql_where=text("status = 'open'")))
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("properties.id", ondelete="RESTRICT"), index=True)
    room_id: Mapped[int | None] = mapped_column(ForeignKey("rooms.id", ondelete="SET NULL"), index=True)
    number: Mapped[str] = mapped_column(String(40), nullable=False)
    customer_name: Mapped[str] = mapped_column(String(100), nullable=False, default="")
    phone: Mapped[str] = mapped_column(String(32), nullable=False, default="", index=True)
    status: Mapped[str] = mapped_column(String(8), nullable=False, default="preset")
    wallet_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id", ondelete="RESTRICT"),
                                                   unique=True)
    alarm1: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal("20.00"))
    alarm2: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal("5.00"))
    overdraft_limit: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal("0.00"))
    alarm_level: Mapped[int] = mapped_column(SmallInteger, nullable=False, default=0)
    # low-balance levels in days of money left (NULL: money only); see forecast_store (migration 0023)
    alarm1_days: Mapped[Decimal | None] = mapped_column(Numeric(5, 1))
    alarm2_days: Mapped[Decimal | None] = mapped_column(Numeric(5, 1))
    purchase_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    opened_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MeterState(TenantMixin, db.Model):
    """A meter bound to an account and where its charging stands (last charged reading, running totals)."""

    __tablename__ = "prepaid_meter_state"
    __table_args__ = (Index("ix_prepaid_meter_state_active", "meter_id", postgresql_where=text("active")),)
    meter_id: Mapped[int] = mapped_column(ForeignKey("meters.id", ondelete="RESTRICT"), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("prepaid_accounts.id", ondelete="RESTRICT"), index=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("properties.id", ondelete="RESTRICT"))
    utility: Mapped[str] = mapped_column(String(16), nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    last_ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_total: Mapped[Decimal | None] = mapped_column(USAGE)  # energy_kwh or water_m3; None: first reading is the baseline
    last_sharp: Mapped[Decimal | None] = mapped_column(USAGE)
    last_peak: Mapped[Decimal | None] = mapped_column(USAGE)
    last_flat: Mapped[Decimal | None] = mapped_column(USAGE)
    last_valley: Mapped[Decimal | None] = mapped_column(USAGE)
    cost_exact_total: Mapped[Decimal] = mapped_column(Numeric, nullable=False, default=Decimal("0"))
    charged_total: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal("0"))
    period_start: Mapped[date | None] = mapped_column(Date)
    period_usage: Mapped[Decimal] = mapped_column(USAGE, nullable=False, default=Decimal("0"))
    meter_purchase_count: Mapped[int | None] = mapped_column(Integer)
    # the meter's own purchase counter minus ours when it was bound (a swapped-in meter has its own past)
    purchase_count_offset: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    bound_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class Charge(TenantMixin, db.Model):
    """Usage of one meter over one interval (last_ts, ts] and what it cost; at most once per interval.

    References are checked per statement by the ``prepaid_charges_refs`` trigger (migration 0010), not by
    row-level foreign keys: ``(meter_id, group_id)`` is a ``prepaid_meter_state`` row, ``(account_id,
    group_id)`` a ``prepaid_accounts`` row, ``(transfer_id, group_id)`` a ``ledger_transfers`` row; those rows
    are never deleted or re-keyed (guard triggers).
    """

    __tablename__ = "prepaid_charges"
    __table_args__ = (UniqueConstraint("meter_id", "interval_end"), UniqueConstraint("meter_id", "interval_start"))
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    group_id: Mapped[int] = mapped_column(BigInteger, nullable=False, default=current_group_id)
    meter_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    account_id: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    transfer_id: Mapped[int | None] = mapped_column(BigInteger)
    tariff_version_id: Mapped[int | None] = mapped_column(BigInteger)
    interval_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    interval_end: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    usage: Mapped[Decimal] = mapped_column(USAGE, nullable=False)
    usage_sharp: Mapped[Decimal | None] = mapped_column(USAGE)
    usage_peak: Mapped[Decimal | None] = mapped_column(USAGE)
    usage_flat: Mapped[Decimal | None] = mapped_column(USAGE)
    usage_valley: Mapped[Decimal | None] = mapped_column(USAGE)
    cost_exact: Mapped[Decimal] = mapped_column(Numeric, nullable=False)
    amount: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    note: Mapped[str] = mapped_column(String(32), nullable=False, default="")  # reset, swap-final…
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class PrepaidEvent(TenantMixin, db.Model):
    """A prepaid event: alarm level crossings, counter resets, purchase-counter mismatches (append-only)."""

    __tablename__ = "prepaid_events"
    __table_args__ = (Index("ix_prepaid_events_txid_id", "txid", "id"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("prepaid_accounts.id", ondelete="RESTRICT"),
                                                   index=True)
    meter_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    kind: Mapped[str] = mapped_column(String(24), nullable=False)  # alarm1|alarm2|arrears|cleared|reset|mismatch
    level: Mapped[int | None] = mapped_column(SmallInteger)
    balance: Mapped[Decimal | None] = mapped_column(MONEY)
    detail: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    # the inserting transaction (txid_current()): the alarm job reads by it, gap-free (migration 0013)
    txid: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=func.txid_current())


class PrepaidForecast(TenantMixin, db.Model):
    """An open account's latest days-left projection and its cost curve (:mod:`.forecast`, :mod:`.forecast_store`)."""

    __tablename__ = "prepaid_forecasts"
    __table_args__ = (Index("ix_prepaid_forecasts_property", "property_id", "days_left"),)
    account_id: Mapped[int] = mapped_column(ForeignKey("prepaid_accounts.id", ondelete="CASCADE"), primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("properties.id", ondelete="CASCADE"), nullable=False)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    status: Mapped[str] = mapped_column(String(10), nullable=False)
    balance: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    days_left: Mapped[Decimal | None] = mapped_column(Numeric(8, 2))
    first_fraction: Mapped[Decimal] = mapped_column(Numeric, nullable=False)
    cum_cost: Mapped[list[Decimal]] = mapped_column(ARRAY(Numeric), nullable=False)
    daily_cost: Mapped[Decimal | None] = mapped_column(MONEY)
