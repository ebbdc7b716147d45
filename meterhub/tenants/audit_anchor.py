"""Checkpoints of each group's audit chain kept outside the database, so a truncated chain is caught.

A checkpoint names the head of a group's chain (last entry id, its seq = the number of entries, its MAC) at a
time, and is itself HMAC-signed with the audit key. It is written by the ``audit.anchor`` periodic job into
``<AUDIT_ANCHOR_DIR or instance/audit_anchors>/<database>/group-<id>.json``, only after the chain since the
previous checkpoint verified, so a forged or shortened chain is never anchored. Entries appended after the
newest checkpoint are not covered yet: the job's interval is the window in which the newest entries could be
removed undetected.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from flask import Flask, current_app
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from .audit import AuditEntry, audit_key, key_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkpoint:
    """The head of one group's chain at ``at``."""

    group_id: int
    last_id: int
    seq: int
    last_mac: str
    count: int
    at: str
    key_id: str

    def payload(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()


def _signature(key: bytes, checkpoint: Checkpoint) -> str:
    return hmac.new(key, b"meterhub audit checkpoint\n" + checkpoint.payload(), hashlib.sha256).hexdigest()


def anchor_dir(app: Flask | None = None) -> Path:
    """The checkpoint folder of the app's database (one per server and database name)."""
    app = app or current_app._get_current_object()
    base = Path(app.config.get("AUDIT_ANCHOR_DIR") or Path(app.instance_path) / "audit_anchors")
    url = make_url(app.config["APP_DATABASE_URL"])  # every process has it (web-only hosts too)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{url.host or 'local'}-{url.port or 5432}-{url.database}")
    return base / name


def _path(group_id: int, app: Flask | None = None) -> Path:
    return anchor_dir(app) / f"group-{int(group_id)}.json"


class CheckpointInvalid(Exception):
    """The checkpoint file exists but its signature, key or content does not verify."""


def read_checkpoint(group_id: int, app: Flask | None = None) -> Checkpoint | None:
    """The group's newest checkpoint (``None`` if none was written); raises :class:`CheckpointInvalid`."""
    path = _path(group_id, app)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise CheckpointInvalid(f"{path} is unreadable ({err})") from err
    try:
        signature = raw.pop("signature")
        checkpoint = Checkpoint(**raw)
    except (KeyError, TypeError) as err:
        raise CheckpointInvalid(f"{path} is not a checkpoint ({err})") from err
    key = audit_key(app)
    if checkpoint.key_id != key_id(key):
        raise CheckpointInvalid(f"{path} was signed with another audit key (key id {checkpoint.key_id}, this "
                                f"instance has {key_id(key)}): set AUDIT_KEY to the key that wrote the log")
    if not hmac.compare_digest(_signature(key, checkpoint), str(signature)):
        raise CheckpointInvalid(f"{path}: the signature does not verify (the file was edited)")
    if checkpoint.group_id != group_id:
        raise CheckpointInvalid(f"{path} is the checkpoint of group {checkpoint.group_id}, not {group_id}")
    return checkpoint


def write_checkpoint(entry: AuditEntry, app: Flask | None = None) -> Checkpoint:
    """Sign and atomically store a checkpoint naming ``entry`` as its group's head."""
    key = audit_key(app)
    checkpoint = Checkpoint(group_id=entry.group_id, last_id=entry.id, seq=entry.seq, last_mac=entry.hash,
                            count=entry.seq, at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            key_id=key_id(key))
    path = _path(entry.group_id, app)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({**asdict(checkpoint), "signature": _signature(key, checkpoint)}, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(scratch, path)
    return checkpoint


def anchor_group(session: Session, group_id: int) -> Checkpoint | None:
    """Verify the chain since the group's checkpoint and, if intact, move the checkpoint to its head.

    Returns the new checkpoint, or ``None`` when it did not move (nothing new, or a broken chain: logged,
    never anchored)."""
    from .audit_chain import verify

    try:
        previous = read_checkpoint(group_id)
    except CheckpointInvalid as err:
        log.error("audit: group %s: %s; not anchoring until `meterhub audit-verify` is looked at", group_id, err)
        return None
    report = verify(session, group_id, incremental=True, checkpoint=previous)
    if not report.ok:
        log.error("audit: group %s chain does not verify, checkpoint kept at #%s: %s", group_id,
                  previous.seq if previous else "-", report.reason)
        return None
    head = session.execute(select(AuditEntry).where(AuditEntry.group_id == group_id)
                           .order_by(AuditEntry.seq.desc()).limit(1)).scalar()
    if head is None or (previous is not None and previous.seq >= head.seq):
        return None
    try:  # a slower run of the job elsewhere must not move the checkpoint back
        newest = read_checkpoint(group_id)
    except CheckpointInvalid:
        newest = previous
    if newest is not None and newest.seq >= head.seq:
        return None
    return write_checkpoint(head)


def anchor_job() -> int:
    """Periodic job: checkpoint the head of every group's chain; returns how many groups moved."""
    from ..db import service_session
    from .models import Group

    with service_session() as session:
        group_ids = session.execute(select(Group.id).order_by(Group.id)).scalars().all()
        return sum(anchor_group(session, group_id) is not None for group_id in group_ids)
