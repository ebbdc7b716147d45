"""Price plans (电价方案) with effective-dated versions, TOU periods, tiers, and assignments.

A plan's prices never change in place: a change is a new :class:`TariffVersion` with a later
``effective_from``, so intervals already charged (and late intervals before that date) keep their price.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..models import TenantMixin, Timestamps

PLAN_KINDS = ("flat", "tou", "tiered", "tiered_tou")
RATES = ("sharp", "peak", "flat", "valley")
TIER_PERIODS = ("month", "year")
SCOPES = ("meter", "room", "building", "property")  # most specific first


class Tariff(TenantMixin, Timestamps, db.Model):
    """A named price plan for one utility, of one property or (``property_id`` NULL) of the whole group."""

    __tablename__ = "tariffs"
    __table_args__ = (UniqueConstraint("group_id", "name"),
                      ForeignKeyConstraint(["group_id", "property_id"], ["properties.group_id", "properties.id"],
                                           name="fk_tariffs_group_property", ondelete="RESTRICT"))
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    property_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    utility: Mapped[str] = mapped_column(String(16), nullable=False, default="electricity")
    versions: Mapped[list[TariffVersion]] = relationship(order_by="TariffVersion.effective_from")


class TariffVersion(TenantMixin, db.Model):
    """The prices of a plan from ``effective_from`` on (until the next version)."""

    __tablename__ = "tariff_versions"
    __table_args__ = (
        UniqueConstraint("tariff_id", "effective_from"),
        CheckConstraint("kind IN ('flat','tou','tiered','tiered_tou')", name="kind"),
        CheckConstraint("tier_period IN ('month','year')", name="tier_period"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tariff_id: Mapped[int] = mapped_column(ForeignKey("tariffs.id", ondelete="RESTRICT"), index=True)
    effective_from: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    # CNY per kWh or m³; a flat/tiered plan uses price_flat for every period.
    price_sharp: Mapped[Decimal] = mapped_column(Numeric(12, 6), nullable=False)
    price_peak: Mapped[Decimal] = mapped_column(Numeric(12, 6), nullable=False)
    price_flat: Mapped[Decimal] = mapped_column(Numeric(12, 6), nullable=False)
    price_valley: Mapped[Decimal] = mapped_column(Numeric(12, 6), nullable=False)
    tier_period: Mapped[str] = mapped_column(String(8), nullable=False, default="month")
    periods: Mapped[list[TariffPeriod]] = relationship(order_by="TariffPeriod.start_minute")
    tiers: Mapped[list[TariffTier]] = relationship(order_by="TariffTier.lower")


class TariffPeriod(TenantMixin, db.Model):
    """A TOU period of the local day [start_minute, end_minute) charged at ``rate``."""

    __tablename__ = "tariff_periods"
    __table_args__ = (
        UniqueConstraint("version_id", "start_minute"),
        CheckConstraint("start_minute >= 0 AND end_minute <= 1440 AND start_minute < end_minute", name="range"),
        CheckConstraint("rate IN ('sharp','peak','flat','valley')", name="rate"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("tariff_versions.id", ondelete="RESTRICT"), index=True)
    start_minute: Mapped[int] = mapped_column(Integer, nullable=False)
    end_minute: Mapped[int] = mapped_column(Integer, nullable=False)
    rate: Mapped[str] = mapped_column(String(8), nullable=False)


class TariffTier(TenantMixin, db.Model):
    """A usage tier: from ``lower`` cumulative usage in the period on, add ``surcharge`` per unit."""

    __tablename__ = "tariff_tiers"
    __table_args__ = (UniqueConstraint("version_id", "lower"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("tariff_versions.id", ondelete="RESTRICT"), index=True)
    lower: Mapped[Decimal] = mapped_column(Numeric(14, 4), nullable=False)
    surcharge: Mapped[Decimal] = mapped_column(Numeric(12, 6), nullable=False)


class TariffAssignment(TenantMixin, db.Model):
    """Which plan applies at a property, building, room or meter (the most specific wins)."""

    __tablename__ = "tariff_assignments"
    __table_args__ = (
        UniqueConstraint("scope", "scope_id", "utility"),
        CheckConstraint("scope IN ('meter','room','building','property')", name="scope"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    scope: Mapped[str] = mapped_column(String(16), nullable=False)
    scope_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    utility: Mapped[str] = mapped_column(String(16), nullable=False, default="electricity")
    tariff_id: Mapped[int] = mapped_column(ForeignKey("tariffs.id", ondelete="RESTRICT"), index=True)
