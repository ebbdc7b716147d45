"""Report tables: export jobs (progress and the file to download) and scheduled (emailed) reports."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Date, DateTime, ForeignKey, Integer, SmallInteger, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from ..models import TenantMixin, utcnow


class ReportExport(TenantMixin, db.Model):
    """One xlsx export run by an rq worker: queued → running → done | failed."""

    __tablename__ = "report_exports"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    operator_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    report: Mapped[str] = mapped_column(String(64), nullable=False)
    params: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict)
    status: Mapped[str] = mapped_column(String(12), nullable=False, default="queued")
    rows: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    total: Mapped[int | None] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(500), nullable=False, default="")  # before 0021: a host's folder
    file_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("stored_files.id", ondelete="SET NULL"))
    data_as_of: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # the replica's replay time
    error: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    owner: Mapped[str | None] = mapped_column(String(120))  # the worker running it (host:pid)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")


class ScheduledReport(TenantMixin, db.Model):
    """A report emailed as xlsx every day (for yesterday) or every month (for last month)."""

    __tablename__ = "scheduled_reports"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    report: Mapped[str] = mapped_column(String(64), nullable=False)
    params: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict)
    frequency: Mapped[str] = mapped_column(String(8), nullable=False, default="daily")  # daily | monthly
    hour: Mapped[int] = mapped_column(SmallInteger, nullable=False, default=7)  # local hour to send at
    recipients: Mapped[list] = mapped_column(JSONB, nullable=False, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    last_period: Mapped[date | None] = mapped_column(Date)  # start of the last period sent
    last_error: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_by: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
