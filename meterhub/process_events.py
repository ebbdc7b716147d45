"""Supervised processes that exited and were restarted: the platform's record, shown to operators.

    record(url, "worker", "exited", {"code": -9, "restart_in_s": 1.0})      # the supervisor, best effort
    recent(session, limit=20)                                               # console panel, ``meterhub status``

The table has no group: one set of processes serves every group, so every operator who may see devices
sees it. Rows are append-only (the app role cannot update or delete them).
"""

from __future__ import annotations

import logging
import socket
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, DateTime, String, func, insert, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, Session, mapped_column

from .extensions import db

log = logging.getLogger(__name__)
EVENTS = ("exited", "restarted", "gave_up")


class ProcessEvent(db.Model):
    """One supervised process exit or restart (``meterhub run`` or the systemd units)."""

    __tablename__ = "process_events"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now(),
                                         index=True)
    host: Mapped[str] = mapped_column(String(255), nullable=False)
    process: Mapped[str] = mapped_column(String(64), nullable=False)
    event: Mapped[str] = mapped_column(String(16), nullable=False)
    detail: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict)


def record(url: str, process: str, event: str, detail: dict[str, Any]) -> bool:
    """Store one event through the service role; False (logged) when the database cannot be reached."""
    from .db import service_engine

    try:
        with service_engine(url).begin() as conn:
            conn.execute(insert(ProcessEvent).values(host=socket.gethostname(), process=process, event=event,
                                                     detail=detail))
        return True
    except Exception as err:  # the supervisor must go on even when the database is down
        log.warning("could not record that %s %s (%s); the log above has it", process, event, err)
        return False


def recent(session: Session, limit: int = 20, since: timedelta | None = None) -> list[ProcessEvent]:
    """The newest events first (only those of the last ``since`` when given)."""
    stmt = select(ProcessEvent).order_by(ProcessEvent.id.desc()).limit(limit)
    if since is not None:
        stmt = stmt.where(ProcessEvent.at >= func.now() - since)
    return list(session.execute(stmt).scalars())
