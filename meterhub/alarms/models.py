"""Alarm tables: alarms with their history, notifier settings, the notification log, portal messages."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from ..models import TenantMixin, utcnow


class Alarm(TenantMixin, db.Model):
    """One alarm of one subject; at most one open (active or acknowledged) per (group, kind, subject)."""

    __tablename__ = "alarms"
    __table_args__ = (
        Index("ux_alarms_open", "group_id", "kind", "subject_key", unique=True,
              postgresql_where=text("state <> 'cleared'")),
        Index("ix_alarms_group_raised", "group_id", "raised_at"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("properties.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="active")
    subject_key: Mapped[str] = mapped_column(String(64), nullable=False)  # meter:12, account:3, device:7...
    meter_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    account_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    device_id: Mapped[int | None] = mapped_column(BigInteger)
    gateway_id: Mapped[int | None] = mapped_column(BigInteger)
    detail: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict)
    occurrences: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    raised_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acknowledged_by: Mapped[int | None] = mapped_column(BigInteger)  # operator id
    acknowledged_by_name: Mapped[str] = mapped_column(String(100), nullable=False, default="")
    cleared_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cleared_by: Mapped[str] = mapped_column(String(100), nullable=False, default="")


class AlarmEvent(TenantMixin, db.Model):
    """History of an alarm: raised, repeated, acknowledged, cleared (append-only)."""

    __tablename__ = "alarm_events"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    alarm_id: Mapped[int] = mapped_column(ForeignKey("alarms.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    action: Mapped[str] = mapped_column(String(16), nullable=False)
    actor: Mapped[str] = mapped_column(String(100), nullable=False, default="system")
    operator_id: Mapped[int | None] = mapped_column(BigInteger)
    note: Mapped[str] = mapped_column(Text, nullable=False, default="")  # typed notes are cut to 500 characters


class NotifierConfig(TenantMixin, db.Model):
    """A group's use of one notifier (email, webhook, sms, portal): settings, encrypted secrets, rules."""

    __tablename__ = "notifier_configs"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    notifier: Mapped[str] = mapped_column(String(32), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    settings: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict)
    secrets: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict)  # name -> AES-GCM token
    kinds: Mapped[list] = mapped_column(JSONB, nullable=False, default=list)  # empty: every kind
    recipients: Mapped[list] = mapped_column(JSONB, nullable=False, default=list)
    throttle_minutes: Mapped[int] = mapped_column(Integer, nullable=False, default=30)
    max_per_hour: Mapped[int] = mapped_column(Integer, nullable=False, default=20)
    quiet_start: Mapped[str | None] = mapped_column(String(5))  # "22:00" local time of the group
    quiet_end: Mapped[str | None] = mapped_column(String(5))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class NotificationLog(TenantMixin, db.Model):
    """One message to one recipient and what became of it."""

    __tablename__ = "notification_log"
    __table_args__ = (Index("ix_notification_log_throttle", "config_id", "recipient", "created_at"),
                      Index("ix_notification_log_held", "send_after", postgresql_where=text("status = 'held'")))
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    alarm_id: Mapped[int | None] = mapped_column(ForeignKey("alarms.id", ondelete="SET NULL"), index=True)
    config_id: Mapped[int | None] = mapped_column(ForeignKey("notifier_configs.id", ondelete="SET NULL"))
    notifier: Mapped[str] = mapped_column(String(32), nullable=False)
    recipient: Mapped[str] = mapped_column(String(300), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False, default="")
    subject_key: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    # queued | held (quiet hours) | retrying | sent | failed | throttled
    status: Mapped[str] = mapped_column(String(12), nullable=False, default="queued")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    title: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    body: Mapped[str] = mapped_column(Text, nullable=False, default="")
    error: Mapped[str] = mapped_column(Text, nullable=False, default="")
    send_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PortalMessage(TenantMixin, db.Model):
    """A message for an account holder, shown in the tenant portal."""

    __tablename__ = "portal_messages"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("prepaid_accounts.id", ondelete="CASCADE"), index=True)
    alarm_id: Mapped[int | None] = mapped_column(ForeignKey("alarms.id", ondelete="SET NULL"))
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AlarmWatermark(db.Model):
    """How far the alarm sources have read (no tenant data): the last id of a source table, or a date."""

    __tablename__ = "alarm_watermarks"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
