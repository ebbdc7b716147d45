"""Time-series tables: raw readings, latest values per meter, usage rollups, health events, MQTT sequences."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from ..models import TenantMixin

ENERGY = Numeric(18, 4)
WATER = Numeric(16, 4)
MONEY = Numeric(14, 3)


class _Quantities:
    """The standard quantity columns (see :mod:`meterhub.timeseries.columns`)."""

    energy_kwh: Mapped[Decimal | None] = mapped_column(ENERGY)
    energy_sharp_kwh: Mapped[Decimal | None] = mapped_column(ENERGY)
    energy_peak_kwh: Mapped[Decimal | None] = mapped_column(ENERGY)
    energy_flat_kwh: Mapped[Decimal | None] = mapped_column(ENERGY)
    energy_valley_kwh: Mapped[Decimal | None] = mapped_column(ENERGY)
    energy_export_kwh: Mapped[Decimal | None] = mapped_column(ENERGY)
    water_m3: Mapped[Decimal | None] = mapped_column(WATER)
    remaining_money: Mapped[Decimal | None] = mapped_column(MONEY)
    purchase_count: Mapped[int | None] = mapped_column(Integer)
    power_kw: Mapped[float | None] = mapped_column(Float)
    voltage_a_v: Mapped[float | None] = mapped_column(Float)
    voltage_b_v: Mapped[float | None] = mapped_column(Float)
    voltage_c_v: Mapped[float | None] = mapped_column(Float)
    current_a_a: Mapped[float | None] = mapped_column(Float)
    current_b_a: Mapped[float | None] = mapped_column(Float)
    current_c_a: Mapped[float | None] = mapped_column(Float)
    power_factor: Mapped[float | None] = mapped_column(Float)
    frequency_hz: Mapped[float | None] = mapped_column(Float)
    relay_closed: Mapped[bool | None] = mapped_column(Boolean)
    valve_open: Mapped[bool | None] = mapped_column(Boolean)
    extra: Mapped[dict | None] = mapped_column(JSONB)


class ReadingRow(_Quantities, db.Model):
    """One channel's values at one time (a fact: append-only; a re-sent reading is ignored). The web app reads
    it through the ``tenant_readings`` view (:mod:`tenant_views`), never directly."""

    __tablename__ = "readings"
    # (meter, group) must be a meter: checked once per statement by a trigger, not per row by a foreign key
    # (migration 0012; on a TimescaleDB hypertable the foreign key of migration 0009 stays).
    __table_args__ = (Index("ix_readings_received_at", "received_at", postgresql_using="brin"),)
    # No index on group_id here: readings are always looked up by meter, and every index slows COPY.
    group_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    meter_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    quality: Mapped[int] = mapped_column(SmallInteger, nullable=False, default=0)
    source: Mapped[str] = mapped_column(String(8), nullable=False, default="poll")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class MeterLatest(_Quantities, TenantMixin, db.Model):
    """The newest known value of every quantity of a meter (merged over readings), for room monitors."""

    __tablename__ = "meter_latest"
    meter_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("meters.id", ondelete="CASCADE"), primary_key=True
    )
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    good_ts: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    quality: Mapped[int] = mapped_column(SmallInteger, nullable=False, default=0)


class _Usage(TenantMixin):
    """Usage of one meter in one bucket: deltas of cumulative counters (never negative)."""

    meter_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("meters.id", ondelete="CASCADE"), primary_key=True
    )
    bucket: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    energy_kwh: Mapped[Decimal | None] = mapped_column(ENERGY)
    energy_sharp_kwh: Mapped[Decimal | None] = mapped_column(ENERGY)
    energy_peak_kwh: Mapped[Decimal | None] = mapped_column(ENERGY)
    energy_flat_kwh: Mapped[Decimal | None] = mapped_column(ENERGY)
    energy_valley_kwh: Mapped[Decimal | None] = mapped_column(ENERGY)
    energy_export_kwh: Mapped[Decimal | None] = mapped_column(ENERGY)
    water_m3: Mapped[Decimal | None] = mapped_column(WATER)
    readings: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    resets: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class UsageHourly(_Usage, db.Model):
    __tablename__ = "usage_hourly"


#: Columns the primary-key index of the day and month rollups carries, so report and chart queries over a
#: bucket range are index-only scans (migration 0011), also through the tenant views (group_id: migration 0020).
USAGE_INCLUDE = ("energy_kwh", "energy_sharp_kwh", "energy_peak_kwh", "energy_flat_kwh", "energy_valley_kwh",
                 "energy_export_kwh", "water_m3", "readings", "resets", "group_id")


class UsageDaily(_Usage, db.Model):
    __tablename__ = "usage_daily"
    __table_args__ = (PrimaryKeyConstraint("meter_id", "bucket", name="pk_usage_daily",
                                           postgresql_include=list(USAGE_INCLUDE)),)


class UsageMonthly(_Usage, db.Model):
    __tablename__ = "usage_monthly"
    __table_args__ = (PrimaryKeyConstraint("meter_id", "bucket", name="pk_usage_monthly",
                                           postgresql_include=list(USAGE_INCLUDE)),)


class HealthEvent(TenantMixin, db.Model):
    """A health transition (offline / online) of a meter, device or gateway; alarms hook in here."""

    __tablename__ = "health_events"
    __table_args__ = (Index("ix_health_events_txid_id", "txid", "id"),
                      # TimescaleDB policy events, for the console's banner (migration 0021)
                      Index("ix_health_events_ts_policy", "group_id", "object_id", "id",
                            postgresql_where=text("object_type = 'ts_policy'")))
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    object_type: Mapped[str] = mapped_column(String(16), nullable=False)
    object_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    event: Mapped[str] = mapped_column(String(16), nullable=False)
    detail: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict)
    # the inserting transaction (txid_current()): the alarm job reads by it, gap-free (migration 0013)
    txid: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=func.txid_current())


class MqttSequence(TenantMixin, db.Model):
    """A (gateway, sequence) already stored: MQTT redeliveries are recognised and not stored twice."""

    __tablename__ = "mqtt_sequences"
    gateway_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("gateways.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), index=True
    )


class TimeseriesState(db.Model):
    """Job watermarks (no tenant data): e.g. when rollups last ran."""

    __tablename__ = "timeseries_state"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
