"""Upgrade path from the unkeyed SHA-256 chain: re-key every existing entry once with the audit key.

Run by migration 0017 as the migration (owner) role. The old chain is verified first and its verdict is
written into a closing ``audit.rekey`` entry of each group, so that tampering done before the upgrade is
recorded instead of being laundered by the new MACs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from types import SimpleNamespace

from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import Connection

from ..models import utcnow
from .audit import GENESIS, audit_key, entry_mac

log = logging.getLogger(__name__)
COLUMNS = "id, seq, group_id, at, actor, operator_id, action, object_type, object_id, detail, ip, prev_hash, hash"


def legacy_hash(prev_hash: str, row: SimpleNamespace) -> str:
    """The pre-0017 SHA-256 of an entry (what the old chain stored)."""
    body = json.dumps({"group_id": row.group_id, "at": row.at.isoformat(timespec="microseconds"),
                       "actor": row.actor, "operator_id": row.operator_id, "action": row.action,
                       "object_type": row.object_type, "object_id": row.object_id, "detail": row.detail,
                       "ip": row.ip}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def _legacy_verdict(rows: list[SimpleNamespace]) -> str:
    prev = GENESIS
    for row in rows:
        if row.prev_hash != prev:
            return f"broken at entry {row.id}: previous-hash link does not match (a row was removed)"
        if legacy_hash(prev, row) != row.hash:
            return f"broken at entry {row.id}: content does not match its hash (the row was edited)"
        prev = row.hash
    return "intact"


def rekey_group(conn: Connection, key: bytes, group_id: int) -> str:
    """Re-key one group's entries in seq order and close with an ``audit.rekey`` entry; returns the verdict."""
    conn.execute(text("SET LOCAL TIME ZONE 'UTC'"))  # the old hashes used the times as the ORM read them
    rows = [SimpleNamespace(**r._mapping) for r in conn.execute(
        text(f"SELECT {COLUMNS} FROM audit_log WHERE group_id = :g ORDER BY seq"), {"g": group_id})]
    verdict = _legacy_verdict(rows)
    prev = GENESIS
    updates = []
    for row in rows:
        row.prev_hash = prev
        row.hash = entry_mac(key, prev, row)
        updates.append({"id": row.id, "p": row.prev_hash, "h": row.hash})
        prev = row.hash
    if updates:
        conn.execute(text("UPDATE audit_log SET prev_hash = :p, hash = :h WHERE id = :id"), updates)
    closing = SimpleNamespace(
        id=conn.execute(text("SELECT nextval(pg_get_serial_sequence('audit_log', 'id'))")).scalar_one(),
        seq=len(rows) + 1, group_id=group_id, at=utcnow(), actor="system", operator_id=None,
        action="audit.rekey", object_type="audit_log", object_id="",
        detail={"entries": len(rows), "legacy_chain": verdict, "scheme": "hmac-sha256"}, ip="", prev_hash=prev)
    closing.hash = entry_mac(key, prev, closing)
    conn.execute(text("INSERT INTO audit_log (id, seq, group_id, at, actor, operator_id, action, object_type, "
                      "object_id, detail, ip, prev_hash, hash) VALUES (:id, :seq, :group_id, :at, :actor, "
                      ":operator_id, :action, :object_type, :object_id, CAST(:detail AS jsonb), :ip, :prev_hash, "
                      ":hash)"), {**vars(closing), "detail": json.dumps(closing.detail)})
    return verdict


def rekey_all(conn: Connection, app: Flask) -> None:
    """Re-key the entries of every group that has any (once, from migration 0017)."""
    key = audit_key(app)
    groups = conn.execute(text("SELECT DISTINCT group_id FROM audit_log ORDER BY group_id")).scalars().all()
    for group_id in groups:
        verdict = rekey_group(conn, key, group_id)
        log.log(logging.INFO if verdict == "intact" else logging.WARNING,
                "audit: group %s re-keyed with HMAC-SHA256; the old SHA-256 chain was %s", group_id, verdict)
