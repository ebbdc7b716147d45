"""Bus leases with fencing epochs and collector membership, in PostgreSQL (docs/collector.md, "Fail-over").

    live = heartbeat(conn, member)                       # upsert my row, the live members (last_seen fresh)
    owners = assign(live, gateway_ids)                   # rendezvous hashing: gateway -> member
    kept = renew(conn, owner, {gid: epoch}, ttl_s)       # {gid: epoch} still mine, expiry moved on
    got = acquire(conn, owner, [gid, ...], ttl_s)        # {gid: new epoch} for free or expired leases
    release(conn, owner, {gid: epoch})                   # expire now, keep the epoch
    stale_gateways(conn, [Fence(...)])                   # FOR SHARE: fences whose epoch moved on

A lease is a row per gateway: ``owner``, ``epoch`` and ``expires_at`` on the database clock. A grant to a new
holder (or to the same one after its lease lapsed) adds one to ``epoch``; nothing ever lowers it (a release
keeps the row). A grant happens only when ``owner IS NULL OR expires_at <= now()``, in one ``UPDATE`` whose row
lock serialises competing collectors. Results carry the :class:`Fence` they were produced under; whoever
stores them checks it with :func:`stale_gateways` in the storing transaction (the ``FOR SHARE`` lock makes a
concurrent grant wait for that commit), and a result whose epoch moved on is refused.

The holder stops talking to the bus by itself before the database can grant the lease again
(:class:`LocalLease`): its deadline is counted on its own monotonic clock from *before* the renewing
transaction began (the database's ``now()`` is that transaction's start, so the row's expiry is later in real
time), minus a drift margin, and a request is sent only if it ends (its timeout) before that deadline.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Integer, String, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from meterhub.errors import MeterhubError
from meterhub.extensions import db

LEASE_TTL_S = 15.0  # a bus lease lives this long after its last renewal (database clock)
RENEW_S = 5.0  # collectors renew leases and heartbeat this often
DRIFT = 0.02  # the local deadline gives up this share of the TTL for clock-rate differences ...
GUARD_S = 0.2  # ... and this much for scheduling delays


class BusLease(db.Model):
    """Who may talk to a gateway's bus, until when, under which fencing epoch."""

    __tablename__ = "bus_leases"
    gateway_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("gateways.id", ondelete="CASCADE"),
                                            primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(200))
    epoch: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    acquired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    __table_args__ = (CheckConstraint("epoch >= 0", name="ck_bus_leases_epoch"),)


class CollectorMember(db.Model):
    """A running collector process; live while ``last_seen`` is younger than the member TTL."""

    __tablename__ = "collector_members"
    member_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), nullable=False)
    pid: Mapped[int] = mapped_column(Integer, nullable=False)
    shard: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now(),
                                                index=True)
    info: Mapped[dict] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))


class StaleLease(MeterhubError):
    """A result was produced under a lease whose epoch has moved on (another owner may have the bus)."""

    def __init__(self, gateway_ids: set[int]) -> None:
        super().__init__(f"bus lease of gateways {sorted(gateway_ids)} moved on; results of the old owner refused")
        self.gateway_ids = gateway_ids


@dataclass(frozen=True)
class Fence:
    """The fencing token a result was produced under."""

    gateway_id: int
    owner: str
    epoch: int

    def as_dict(self) -> dict[str, Any]:
        return {"gateway_id": self.gateway_id, "owner": self.owner, "epoch": self.epoch}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Fence | None:
        if not data or data.get("epoch") is None:
            return None
        return cls(int(data["gateway_id"]), str(data["owner"]), int(data["epoch"]))


class LocalLease:
    """The holder's view of one lease: may it still send a request that ends by ``now + duration_s``?"""

    def __init__(self, gateway_id: int, owner: str, epoch: int, ttl_s: float, started: float,
                 clock: Any = time.monotonic) -> None:
        self.gateway_id, self.owner, self.ttl_s, self.clock = gateway_id, owner, ttl_s, clock
        self.epoch = epoch
        self.deadline = 0.0
        self.renewed(started)

    def renewed(self, started: float, epoch: int | None = None) -> None:
        """The lease was granted/renewed by a transaction that began after local time ``started``."""
        self.epoch = self.epoch if epoch is None else epoch
        self.deadline = started + self.ttl_s * (1 - DRIFT) - GUARD_S

    def revoke(self) -> None:
        self.deadline = 0.0

    def may_send(self, duration_s: float) -> bool:
        return self.clock() + duration_s < self.deadline

    @property
    def fence(self) -> Fence:
        return Fence(self.gateway_id, self.owner, self.epoch)


class LeaseExpired(MeterhubError):
    """The local lease deadline does not leave room for another request: stop talking to the bus."""


def member_id(shard: str | None = None) -> str:
    """``collector:<host>:<pid>[:<shard>]``; unique per process."""
    base = f"collector:{socket.gethostname()}:{os.getpid()}"
    return f"{base}:{shard}" if shard else base


def _score(member: str, gateway_id: int) -> bytes:
    return hashlib.blake2b(f"{member}|{gateway_id}".encode(), digest_size=8).digest()


def assign(members: Iterable[str], gateway_ids: Iterable[int]) -> dict[int, str]:
    """Rendezvous (highest random weight) hashing: each gateway to the member with the highest score.

    A member that joins takes about 1/n of every other member's gateways; one that leaves hands its own to
    the others evenly; every other gateway stays where it is.
    """
    live = sorted(set(members))
    if not live:
        return {}
    return {gid: max(live, key=lambda m, g=gid: _score(m, g)) for gid in gateway_ids}


def dead_local(member_ids: Iterable[str]) -> list[str]:
    """The members that are collector processes of this host (same host name) which no longer run (killed:
    their row and leases outlive them by a TTL). Never a process of another host; a reused pid reads alive."""
    here, dead = socket.gethostname(), []
    for member in member_ids:
        parts = member.split(":")
        if len(parts) < 3 or parts[0] != "collector" or parts[1] != here or not parts[2].isdigit():
            continue
        pid = int(parts[2])
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.append(member)
            continue
        except PermissionError:
            continue
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    dead.append(member)
        except (OSError, IndexError):
            pass
    return dead


def heartbeat(conn: Connection, member: str, *, shard: str | None, ttl_s: float,
              info: dict[str, Any] | None = None) -> list[str]:
    """Record that ``member`` is alive; return the live dynamic members (no ``--shard``), itself included
    when it is one. Members silent for ten TTLs are deleted; collectors of this host that no longer run are
    deleted at once and their leases expired (a restarted collector need not wait a TTL for them)."""
    import json

    conn.execute(text(
        "INSERT INTO collector_members (member_id, host, pid, shard, info) VALUES (:m, :h, :p, :s, CAST(:i AS jsonb)) "
        "ON CONFLICT (member_id) DO UPDATE SET last_seen = now(), info = EXCLUDED.info"),
        {"m": member, "h": socket.gethostname(), "p": os.getpid(), "s": shard, "i": json.dumps(info or {})})
    conn.execute(text("DELETE FROM collector_members WHERE last_seen < now() - make_interval(secs => :t)"),
                 {"t": ttl_s * 10})
    local = [r[0] for r in conn.execute(text(
        "SELECT member_id FROM collector_members WHERE host = :h UNION "
        "SELECT DISTINCT owner FROM bus_leases WHERE owner LIKE :like AND expires_at > now()"),
        {"h": socket.gethostname(), "like": f"collector:{socket.gethostname()}:%"})]
    gone = dead_local(local)
    if gone:
        conn.execute(text("DELETE FROM collector_members WHERE member_id = ANY(:m)"), {"m": gone})
        conn.execute(text("UPDATE bus_leases SET expires_at = now() WHERE owner = ANY(:m) AND expires_at > now()"),
                     {"m": gone})
    rows = conn.execute(text("SELECT member_id FROM collector_members WHERE shard IS NULL "
                             "AND last_seen > now() - make_interval(secs => :t) ORDER BY member_id"), {"t": ttl_s})
    return [r[0] for r in rows]


def leave(conn: Connection, member: str) -> None:
    conn.execute(text("DELETE FROM collector_members WHERE member_id = :m"), {"m": member})


def renew(conn: Connection, owner: str, held: dict[int, int], ttl_s: float) -> dict[int, int]:
    """Move the expiry of the leases still ours (same owner and epoch, not expired); returns them."""
    if not held:
        return {}
    rows = conn.execute(text(
        "UPDATE bus_leases l SET expires_at = now() + make_interval(secs => :ttl) "
        "FROM unnest(CAST(:ids AS bigint[]), CAST(:epochs AS bigint[])) AS h(gid, epoch) "
        "WHERE l.gateway_id = h.gid AND l.epoch = h.epoch AND l.owner = :o AND l.expires_at > now() "
        "RETURNING l.gateway_id, l.epoch"),
        {"ids": list(held), "epochs": list(held.values()), "o": owner, "ttl": ttl_s})
    return {int(g): int(e) for g, e in rows}


def acquire(conn: Connection, owner: str, gateway_ids: Iterable[int], ttl_s: float) -> dict[int, int]:
    """Take the leases of these gateways that are free or expired; returns ``{gateway_id: new epoch}``."""
    ids = sorted(set(gateway_ids))
    if not ids:
        return {}
    conn.execute(text("INSERT INTO bus_leases (gateway_id) SELECT id FROM gateways WHERE id = ANY(:ids) "
                      "ON CONFLICT (gateway_id) DO NOTHING"), {"ids": ids})
    rows = conn.execute(text(
        "UPDATE bus_leases SET owner = :o, epoch = epoch + 1, acquired_at = now(), "
        "expires_at = now() + make_interval(secs => :ttl) "
        "WHERE gateway_id = ANY(:ids) AND (owner IS NULL OR expires_at <= now()) RETURNING gateway_id, epoch"),
        {"ids": ids, "o": owner, "ttl": ttl_s})
    return {int(g): int(e) for g, e in rows}


def release(conn: Connection, owner: str, held: dict[int, int]) -> None:
    """Give leases up now (the caller stopped talking to those buses first); epochs stay."""
    if held:
        conn.execute(text(
            "UPDATE bus_leases l SET owner = NULL, expires_at = now() "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:epochs AS bigint[])) AS h(gid, epoch) "
            "WHERE l.gateway_id = h.gid AND l.epoch = h.epoch AND l.owner = :o"),
            {"ids": list(held), "epochs": list(held.values()), "o": owner})


def holder(conn: Connection, gateway_id: int) -> tuple[str, int] | None:
    """``(owner, epoch)`` of the unexpired lease of a gateway, or None."""
    row = conn.execute(text("SELECT owner, epoch FROM bus_leases WHERE gateway_id = :g AND owner IS NOT NULL "
                            "AND expires_at > now()"), {"g": gateway_id}).first()
    return (str(row[0]), int(row[1])) if row else None


def stale_gateways(conn: Any, fences: Iterable[Fence], *, strict: bool = True) -> set[int]:
    """Gateways of ``fences`` whose lease epoch moved on (or that have no lease). Locks the lease rows
    ``FOR SHARE`` until the caller's transaction ends, so no grant slips in before its results commit.
    ``conn`` is a SQLAlchemy connection/session or a DB-API cursor.

    ``strict`` (command results): any other epoch is stale. Not strict (readings): stale only when the
    current epoch belongs to another owner; the same process holding a newer epoch (its lease lapsed while
    the database was away and it was granted again) stores the readings it took before, which it took while
    it alone held the bus."""
    fences = list(fences)
    if not fences:
        return set()
    wanted = {f.gateway_id: f for f in fences}
    sql = ("SELECT gateway_id, epoch, owner FROM bus_leases WHERE gateway_id = ANY(%(ids)s) "
           "ORDER BY gateway_id FOR SHARE")
    if hasattr(conn, "execute") and not hasattr(conn, "fetchall"):
        rows = conn.execute(text(sql.replace("%(ids)s", ":ids")), {"ids": sorted(wanted)}).all()
    else:
        conn.execute(sql, {"ids": sorted(wanted)})
        rows = conn.fetchall()
    current = {int(g): (int(e), o) for g, e, o in rows}
    stale = set()
    for fence in fences:
        epoch, owner = current.get(fence.gateway_id, (None, None))
        if epoch != fence.epoch and (strict or owner != fence.owner):
            stale.add(fence.gateway_id)
    return stale
