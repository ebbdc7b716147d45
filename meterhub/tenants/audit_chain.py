"""Verifying a group's audit chain: every forged, rewritten, deleted or truncated entry is named.

Each entry's MAC must verify with the audit key (an entry made or changed without the key does not), the
``seq`` numbers must run 1, 2, 3... without a gap (a deleted entry leaves one), each authentic entry must link
to the MAC of the entry before it, and the chain must still reach the group's newest checkpoint (entries
removed from the end leave no gap but fall short of it).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .audit import GENESIS, AuditEntry, audit_key, entry_mac
from .audit_anchor import Checkpoint, CheckpointInvalid, read_checkpoint

_UNSET = object()


@dataclass(frozen=True)
class ChainProblem:
    """One finding: ``kind`` is forged, deleted, truncated, link or checkpoint."""

    kind: str
    entry_id: int | None
    message: str


@dataclass
class ChainReport:
    """The verdict on one group's chain."""

    group_id: int
    checked: int = 0
    problems: list[ChainProblem] = field(default_factory=list)
    checkpoint: Checkpoint | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_broken_id(self) -> int | None:
        """The entry the first problem names (``None`` when intact or when the problem names no entry)."""
        return self.problems[0].entry_id if self.problems else None

    @property
    def reason(self) -> str:
        return self.problems[0].message if self.problems else ""

    def add(self, kind: str, entry_id: int | None, message: str) -> None:
        self.problems.append(ChainProblem(kind, entry_id, message))


def _missing(first: int, last: int) -> str:
    return f"entry #{first} is" if first == last else f"entries #{first} to #{last} ({last - first + 1}) are"


def verify(session: Session, group_id: int, *, incremental: bool = False, checkpoint: object = _UNSET) -> ChainReport:
    """Verify the group's chain (``incremental``: only from its checkpoint on, plus a count of the rest)."""
    report = ChainReport(group_id)
    unusable = ""
    if checkpoint is _UNSET:
        try:
            checkpoint = read_checkpoint(group_id)
        except CheckpointInvalid as err:
            unusable, checkpoint = f"checkpoint unusable, truncation cannot be checked: {err}", None
    report.checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else None
    anchor = report.checkpoint
    key = audit_key()
    stmt = select(AuditEntry).where(AuditEntry.group_id == group_id).order_by(AuditEntry.seq, AuditEntry.id)
    start = 1
    if incremental and anchor is not None:
        stmt = stmt.where(AuditEntry.seq >= anchor.seq)
        start = anchor.seq
        before = session.execute(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.group_id == group_id, AuditEntry.seq < anchor.seq)).scalar_one()
        if before != anchor.seq - 1:
            report.add("deleted", None, f"{anchor.seq - 1 - before} entries before the checkpoint's entry "
                                        f"#{anchor.seq} are missing: run `meterhub audit-verify` to name them")
    prev: AuditEntry | None = None
    for entry in session.execute(stmt).scalars().yield_per(1000):
        report.checked += 1
        expected = prev.seq + 1 if prev is not None else start
        if entry.seq > expected:
            after = f"after entry {prev.id}" if prev is not None else "at the start of the log"
            report.add("deleted", entry.id, f"{_missing(expected, entry.seq - 1)} missing (deleted) {after}, "
                                            f"before entry {entry.id}; the previous-MAC link was removed")
        authentic = hmac.compare_digest(entry_mac(key, entry.prev_hash, entry), entry.hash)
        if not authentic:
            report.add("forged", entry.id, f"entry {entry.id} (#{entry.seq}, {entry.action} by {entry.actor}) does "
                                           "not verify with the audit key: inserted without the key or edited")
        elif entry.seq == 1 and entry.prev_hash != GENESIS or (
                prev is not None and prev.seq == entry.seq - 1 and entry.prev_hash != prev.hash
                and hmac.compare_digest(entry_mac(key, prev.prev_hash, prev), prev.hash)):
            report.add("link", entry.id, f"entry {entry.id} (#{entry.seq}) links to another entry than #{entry.seq - 1}"
                                         " before it: that entry was replaced")
        if anchor is not None and entry.seq == anchor.seq and (entry.id != anchor.last_id
                                                               or entry.hash != anchor.last_mac):
            report.add("forged", entry.id, f"entry #{entry.seq} (id {entry.id}) is not the entry the checkpoint of "
                                           f"{anchor.at} names (id {anchor.last_id}): replaced or rewritten")
        prev = entry
    last_seq = prev.seq if prev is not None else start - 1
    if anchor is not None and last_seq < anchor.seq:
        after = f"after entry {prev.id}" if prev is not None else "(the whole log)"
        report.add("truncated", anchor.last_id,
                   f"{_missing(last_seq + 1, anchor.seq)} missing {after} up to entry {anchor.last_id}, which the "
                   f"checkpoint of {anchor.at} names as the head: the log was truncated")
    if unusable:
        report.add("checkpoint", None, unusable)
    return report
