"""Shared model pieces: the tenant mixin and timestamps."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import BigInteger, DateTime, ForeignKey
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from .db import current_group_id


def utcnow() -> datetime:
    """Timezone-aware now in UTC (the database stores timestamptz)."""
    return datetime.now(timezone.utc)


class TenantMixin:
    """A row owned by one group: ``group_id NOT NULL`` guarded by row-level security."""

    @declared_attr
    def group_id(cls) -> Mapped[int]:  # noqa: N805
        return mapped_column(
            BigInteger,
            ForeignKey("groups.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
            default=current_group_id,
        )


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
