"""Reads that may come from a hot-standby replica: reports, dashboards and exports (``REPLICA_DATABASE_URL``).

The replica URL names the standby server like ``DATABASE_URL`` names the primary; the app and service roles
log in there with the same users and passwords (a physical replica has the primary's roles). Money, commands
and everything that writes never come here: they use ``db.session`` and :func:`meterhub.db.service_session`,
bound to the primary. A page or export read from the replica says how fresh it is (:class:`Freshness`, from
``pg_last_xact_replay_timestamp()``). Without a replica, or when it is unreachable or further behind than
``REPLICA_MAX_LAG_SECONDS``, the same reads go to the primary.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from flask import Flask, current_app, g, has_app_context
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from .config import role_url
from .db import service_session
from .extensions import db

log = logging.getLogger(__name__)
_engines: dict[str, Engine] = {}
_FRESHNESS = text("SELECT pg_is_in_recovery(), pg_last_xact_replay_timestamp(), now(), "
                  "pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn()")


@dataclass(frozen=True)
class Freshness:
    """Where a read came from and how fresh it is: ``as_of`` the last change replayed on the replica."""

    source: str  # "primary" | "replica"
    as_of: datetime | None = None
    lag_seconds: float | None = None  # now - as_of while WAL waits to be applied; 0 when nothing waits
    caught_up: bool = True

    @property
    def replica(self) -> bool:
        return self.source == "replica"


PRIMARY = Freshness("primary")


def replica_engine(role: str = "APP") -> Engine | None:
    """The replica's engine for the app (``APP``) or service (``SERVICE``) role; None without a replica."""
    config = current_app.config
    base = config.get("REPLICA_DATABASE_URL")
    if not base:
        return None
    url = role_url(base, config[f"{role}_DB_USER"], config.get(f"{role}_DB_PASSWORD") or "")
    if url not in _engines:
        _engines[url] = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    return _engines[url]


def freshness(session: Session) -> Freshness:
    """How fresh what ``session`` reads is (a primary answers :data:`PRIMARY`)."""
    in_recovery, replayed, now, caught_up = session.execute(_FRESHNESS).one()
    if not in_recovery:
        return PRIMARY
    lag = 0.0 if caught_up or replayed is None else max(0.0, (now - replayed).total_seconds())
    return Freshness("replica", replayed, lag, bool(caught_up))


def _open(engine: Engine, service: bool) -> tuple[Session, Freshness] | None:
    """A session on the replica and its freshness, or None when it is unreachable or too far behind."""
    session = Session(bind=engine, info={"service": True} if service else {}, expire_on_commit=False)
    try:
        fresh = freshness(session)
    except OperationalError as err:
        session.close()
        log.warning("read replica unreachable, reading from the primary: %s", str(err).splitlines()[0])
        return None
    limit = current_app.config.get("REPLICA_MAX_LAG_SECONDS")
    if limit is not None and fresh.lag_seconds is not None and fresh.lag_seconds > float(limit):
        session.close()
        log.warning("read replica %.0f s behind (over %s s), reading from the primary", fresh.lag_seconds, limit)
        return None
    return session, fresh


def reads() -> tuple[Session, Freshness]:
    """The session a web request's reports and dashboards read with (the app role, the request's group, under
    row-level security) and its freshness: the replica's when configured and usable, else ``db.session``."""
    if "meterhub_reads" not in g:
        engine = replica_engine("APP")
        g.meterhub_reads = (_open(engine, service=False) if engine is not None else None) or (db.session, PRIMARY)
    return g.meterhub_reads


@contextmanager
def service_reads() -> Iterator[tuple[Session, Freshness]]:
    """A read-only service-role session for background reads (exports): on the replica when usable."""
    engine = replica_engine("SERVICE") if has_app_context() else None
    opened = _open(engine, service=True) if engine is not None else None
    if opened is None:
        with service_session() as session:
            yield session, PRIMARY
        return
    session, fresh = opened
    try:
        yield session, fresh
    finally:
        session.rollback()
        session.close()


def _close(_exc: BaseException | None) -> None:
    opened = g.pop("meterhub_reads", None)
    if opened is not None and opened[0] is not db.session:
        opened[0].rollback()
        opened[0].close()


def init_app(app: Flask) -> None:
    """Close the request's replica session at the end of the request."""
    app.teardown_appcontext(_close)


def dispose_replica_engines() -> None:
    """Close pooled replica connections (tests stopping a replica call this)."""
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()

