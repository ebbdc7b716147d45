"""Gateways (buses), devices (one unit at one bus address) and meters (billable channels)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, Numeric, String, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..db import current_group_id
from ..models import TenantMixin, Timestamps

FRAMINGS = ("modbus-tcp", "modbus-rtu-over-tcp", "cjt188-over-tcp", "mqtt", "acrel-4g")
DIALIN_FRAMINGS = ("acrel-4g",)  # the meter is its own gateway and dials in to ``meterhub dialin``
UTILITIES = ("electricity", "water")


class Gateway(TenantMixin, Timestamps, db.Model):
    """A bus: one RS485 line behind a serial server / gateway, or a push gateway over MQTT."""

    __tablename__ = "gateways"
    # The MQTT client id is the gateway's broker user name and its topic level: unique across groups.
    __table_args__ = (UniqueConstraint("group_id", "name"),
                      Index("uq_gateways_mqtt_client_id", "mqtt_client_id", unique=True,
                            postgresql_where=text("mqtt_client_id IS NOT NULL")))
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("properties.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    host: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    port: Mapped[int] = mapped_column(Integer, nullable=False, default=502)
    framing: Mapped[str] = mapped_column(String(32), nullable=False, default="modbus-rtu-over-tcp")
    bus: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict)  # baud, parity, pause_ms...
    mqtt_client_id: Mapped[str | None] = mapped_column(String(100))
    # PBKDF2-SHA512 ($7$, Mosquitto's format) of the broker password, shown once when issued; None: cannot sign in.
    mqtt_password_hash: Mapped[str | None] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="unknown")
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    fault_count: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    # polling | down (no collector heartbeat for this bus) | NULL (never polled): meterhub.collector.liveness
    collector_state: Mapped[str | None] = mapped_column(String(16))
    collector_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    devices: Mapped[list[Device]] = relationship(back_populates="gateway", order_by="Device.address")


class Device(TenantMixin, Timestamps, db.Model):
    """One physical unit at one bus address, read and commanded through its driver."""

    __tablename__ = "devices"
    __table_args__ = (
        UniqueConstraint("group_id", "driver_key", "serial"),
        UniqueConstraint("gateway_id", "address"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("properties.id", ondelete="RESTRICT"), index=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id", ondelete="RESTRICT"), index=True)
    driver_key: Mapped[str] = mapped_column(String(64), nullable=False)
    address: Mapped[str] = mapped_column(String(32), nullable=False)  # Modbus slave id or CJ/T 188 address
    serial: Mapped[str] = mapped_column(String(64), nullable=False)
    config: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="unknown")
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    fault_count: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    gateway: Mapped[Gateway] = relationship(back_populates="devices")
    meters: Mapped[list[Meter]] = relationship(back_populates="device", order_by="Meter.channel")


class Meter(Timestamps, db.Model):
    """One metering channel of a device (回路); what gets billed."""

    __tablename__ = "meters"
    # (group_id, id) is unique so that readings can reference "this meter of this group" (migration 0009);
    # it also serves look-ups by group, so group_id has no index of its own.
    __table_args__ = (UniqueConstraint("device_id", "channel"),
                      UniqueConstraint("group_id", "id", name="uq_meters_group_id_id"),
                      Index("ix_meters_installed_at", "installed_at", postgresql_where=text("installed_at IS NOT NULL")),
                      Index("ix_meters_offline", "property_id", postgresql_where=text("status = 'offline'")))
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    group_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("groups.id", ondelete="CASCADE"), nullable=False,
                                          default=current_group_id)
    property_id: Mapped[int] = mapped_column(ForeignKey("properties.id", ondelete="RESTRICT"), index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="RESTRICT"), index=True)
    room_id: Mapped[int | None] = mapped_column(ForeignKey("rooms.id", ondelete="SET NULL"), index=True)
    channel: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    utility: Mapped[str] = mapped_column(String(16), nullable=False, default="electricity")
    name: Mapped[str] = mapped_column(String(100), nullable=False, default="")
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="unknown")
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    relay_desired: Mapped[bool | None] = mapped_column(Boolean)  # True closed, False open, None no opinion
    relay_closed: Mapped[bool | None] = mapped_column(Boolean)
    keep_power: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    overload_limit_kw: Mapped[Decimal | None] = mapped_column(Numeric(10, 3))
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    installed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # readings before it are refused
    # installed in its room from installed_at until removed_at (a swap): usage outside belongs to no room
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    device: Mapped[Device] = relationship(back_populates="meters")
