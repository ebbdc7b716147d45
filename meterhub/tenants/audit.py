"""The audit log: append-only rows, each holding the hash of the previous row of its group.

The app role may only INSERT and SELECT ``audit_log`` (no UPDATE/DELETE grant), and the chain makes
any edit made with higher privileges detectable by :func:`verify_chain`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, String, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, Session, mapped_column

from ..extensions import db
from ..models import TenantMixin, utcnow

GENESIS = "0" * 64


class AuditEntry(TenantMixin, db.Model):
    """One operator or system action."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    actor: Mapped[str] = mapped_column(String(100), nullable=False)
    operator_id: Mapped[int | None] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    object_type: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    object_id: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    detail: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict)
    ip: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)


def entry_hash(prev_hash: str, entry: AuditEntry) -> str:
    """SHA-256 over the previous hash and the row's content in a canonical form."""
    body = json.dumps(
        {
            "group_id": entry.group_id,
            "at": entry.at.isoformat(timespec="microseconds"),
            "actor": entry.actor,
            "operator_id": entry.operator_id,
            "action": entry.action,
            "object_type": entry.object_type,
            "object_id": entry.object_id,
            "detail": entry.detail,
            "ip": entry.ip,
        },
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def record(
    session: Session,
    group_id: int,
    action: str,
    *,
    actor: str,
    operator_id: int | None = None,
    object_type: str = "",
    object_id: Any = "",
    detail: dict[str, Any] | None = None,
    ip: str = "",
) -> AuditEntry:
    """Append an entry to the group's chain inside the caller's transaction."""
    # One writer per group at a time, so two entries never share a previous hash.
    session.execute(text("SELECT pg_advisory_xact_lock(7305, :g)"), {"g": group_id})
    prev = session.execute(
        select(AuditEntry.hash)
        .where(AuditEntry.group_id == group_id)
        .order_by(AuditEntry.id.desc())
        .limit(1)
    ).scalar()
    entry = AuditEntry(
        group_id=group_id,
        at=utcnow(),
        actor=actor,
        operator_id=operator_id,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        detail=json.loads(json.dumps(detail or {}, default=str)),
        ip=ip,
        prev_hash=prev or GENESIS,
    )
    entry.hash = entry_hash(entry.prev_hash, entry)
    session.add(entry)
    session.flush()
    return entry


@dataclass
class ChainReport:
    checked: int
    first_broken_id: int | None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.first_broken_id is None


def verify_chain(session: Session, group_id: int) -> ChainReport:
    """Walk the group's chain in order; report the first row whose links or content do not verify."""
    prev = GENESIS
    checked = 0
    rows = session.execute(
        select(AuditEntry).where(AuditEntry.group_id == group_id).order_by(AuditEntry.id)
    ).scalars()
    for entry in rows.yield_per(1000):
        checked += 1
        if entry.prev_hash != prev:
            return ChainReport(checked, entry.id, "previous-hash link does not match (a row was removed)")
        if entry_hash(prev, entry) != entry.hash:
            return ChainReport(checked, entry.id, "content does not match its hash (the row was edited)")
        prev = entry.hash
    return ChainReport(checked, None)
