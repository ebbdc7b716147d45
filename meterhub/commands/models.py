"""Device commands: one row per command with a state machine (see ``state.py``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, false, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from ..models import TenantMixin, utcnow

KINDS = ("switch", "keep_power", "resume_prepaid", "set_prices", "set_thresholds", "set_overload_limit",
         "write_topup", "valve", "read_now")
STATES = ("queued", "sent", "confirmed", "failed", "expired", "cancelled")
OPEN_STATES = ("queued", "sent")
FINAL_STATES = ("confirmed", "failed", "expired", "cancelled")


class Command(TenantMixin, db.Model):
    """A command to one meter (channel of a device) on one gateway bus."""

    __tablename__ = "commands"
    __table_args__ = (
        Index("ix_commands_open", "state", "created_at", postgresql_where="state IN ('queued','sent')"),
        Index("ix_commands_meter_created", "meter_id", "created_at"),
        Index("ix_commands_meter_open", "meter_id", "id", postgresql_where=text("state IN ('queued','sent')")),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("properties.id", ondelete="RESTRICT"), index=True)
    meter_id: Mapped[int] = mapped_column(ForeignKey("meters.id", ondelete="CASCADE"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(24), nullable=False)
    params: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict)
    state: Mapped[str] = mapped_column(String(12), nullable=False, default="queued")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=3)
    source: Mapped[str] = mapped_column(String(16), nullable=False, default="operator")  # operator|prepaid|batch
    actor: Mapped[str] = mapped_column(String(100), nullable=False, default="system")
    operator_id: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str] = mapped_column(Text, nullable=False, default="")  # in English, for logs and the API
    error_code: Mapped[str | None] = mapped_column(String(64))  # shown translated: meterhub.commands.messages
    error_params: Mapped[dict | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    job_id: Mapped[str | None] = mapped_column(String(64))  # the rq job carrying it while queued
    owner: Mapped[str | None] = mapped_column(String(120))  # the worker that sent it (host:pid)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # the owner's last sign of life
    verify_first: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
