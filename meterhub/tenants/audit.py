"""The audit log: append-only rows, each keyed into its group's chain with an HMAC.

Every entry holds ``seq`` (1, 2, 3... per group), the MAC of the entry before it (``prev_hash``) and its own
MAC (``hash``): HMAC-SHA256 with the audit key over the previous MAC and the entry's content, id and seq.
The audit key lives outside the database (``AUDIT_KEY`` or ``instance/audit_key``), so no database role can
make an entry that verifies: whoever inserts, rewrites or re-chains rows without the key is named by
:mod:`.audit_chain`; truncation is caught against the checkpoints of :mod:`.audit_anchor`.
The app role may only INSERT and SELECT ``audit_log``; the service role only INSERT, SELECT.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timezone
from typing import Any

from flask import Flask, current_app, has_app_context
from sqlalchemy import BigInteger, DateTime, String, UniqueConstraint, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, Session, mapped_column

from ..errors import ConfigError
from ..extensions import db
from ..instance_secrets import instance_secret
from ..models import TenantMixin, utcnow

GENESIS = "0" * 64
KEY_FILE = "audit_key"
MIN_KEY_LENGTH = 32


class AuditEntry(TenantMixin, db.Model):
    """One operator or system action."""

    __tablename__ = "audit_log"
    __table_args__ = (UniqueConstraint("group_id", "seq", name="uq_audit_log_group_id_seq"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
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


def load_audit_key(app: Flask) -> bytes:
    """The audit key of ``app``: ``AUDIT_KEY`` if configured, else ``instance/audit_key`` (made on first start)."""
    configured = app.config.get("AUDIT_KEY")
    if configured:
        if len(str(configured)) < MIN_KEY_LENGTH:
            raise ConfigError(f"AUDIT_KEY must be at least {MIN_KEY_LENGTH} characters of random text "
                              "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        return str(configured).encode()
    return instance_secret(app.instance_path, KEY_FILE).encode()


_process_key: bytes | None = None  # the key of the app this process made, for threads with no app context


def audit_key(app: Flask | None = None) -> bytes:
    """The audit key of ``app`` or the current app (cached in its extensions); in a thread with no app
    context (charging shards), the key of the app this process created."""
    global _process_key
    if app is None and not has_app_context():
        if _process_key is None:
            raise ConfigError("no audit key in this process: create the app (meterhub.app.create_app) first")
        return _process_key
    app = app or current_app._get_current_object()
    key = app.extensions.get("meterhub.audit_key")
    if key is None:
        key = app.extensions["meterhub.audit_key"] = load_audit_key(app)
        _process_key = key
    return key


def key_id(key: bytes) -> str:
    """A short public fingerprint of ``key`` (tells which key signed a checkpoint, reveals nothing)."""
    return hmac.new(key, b"meterhub audit key id", hashlib.sha256).hexdigest()[:16]


def canonical(entry: AuditEntry) -> str:
    """The entry's content, id and place in its chain as canonical JSON (times in UTC)."""
    return json.dumps(
        {
            "id": entry.id,
            "seq": entry.seq,
            "group_id": entry.group_id,
            "at": entry.at.astimezone(timezone.utc).isoformat(timespec="microseconds"),
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


def entry_mac(key: bytes, prev_hash: str, entry: AuditEntry) -> str:
    """HMAC-SHA256 over the previous entry's MAC and this entry's canonical content."""
    return hmac.new(key, f"{prev_hash}\n{canonical(entry)}".encode(), hashlib.sha256).hexdigest()


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
    # One writer per group at a time, so two entries never share a previous MAC or a seq.
    session.execute(text("SELECT pg_advisory_xact_lock(7305, :g)"), {"g": group_id})
    last = session.execute(
        select(AuditEntry.seq, AuditEntry.hash)
        .where(AuditEntry.group_id == group_id)
        .order_by(AuditEntry.seq.desc())
        .limit(1)
    ).first()
    entry = AuditEntry(
        id=session.execute(text("SELECT nextval(pg_get_serial_sequence('audit_log', 'id'))")).scalar_one(),
        seq=(last.seq + 1) if last else 1,
        group_id=group_id,
        at=utcnow(),
        actor=actor,
        operator_id=operator_id,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        detail=json.loads(json.dumps(detail or {}, default=str)),
        ip=ip,
        prev_hash=last.hash if last else GENESIS,
    )
    entry.hash = entry_mac(audit_key(), entry.prev_hash, entry)
    session.add(entry)
    session.flush()
    return entry


def verify_chain(session: Session, group_id: int):  # noqa: ANN201 (re-exported, see audit_chain)
    """Verify the group's chain against the audit key and its checkpoint (see :func:`.audit_chain.verify`)."""
    from .audit_chain import verify

    return verify(session, group_id)
