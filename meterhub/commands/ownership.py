"""Who carries a command, and the deadline by which it must show a sign of life.

A command job claims its row when it marks it ``sent`` (``owner`` = host:pid, ``heartbeat_at`` = now) and a
thread renews ``heartbeat_at`` every :data:`HEARTBEAT_S` while the job talks to the device. The sweep (run
by ``dispatch`` every 15 s) resolves what nobody owns any more:

- ``sent`` with a heartbeat older than :data:`ORPHAN_AFTER`: the worker died mid-command. It goes back to
  ``queued`` with ``verify_first``: the next job reads the meter and confirms the command if the device
  already shows it (a relay in the wanted position, the purchase counter at or past the write), else sends
  it again.
- ``queued`` and handed to rq more than :data:`LOST_JOB_AFTER` ago, but its rq job is gone, failed or
  finished without claiming it: the job died before marking it ``sent`` (or Redis lost it); it is
  enqueued again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import or_, select, text
from sqlalchemy.orm import Session

from ..models import utcnow
from .messages import failure
from .models import Command

log = logging.getLogger(__name__)
HEARTBEAT_S = 5.0  # config COMMAND_HEARTBEAT_S
ORPHAN_AFTER = timedelta(seconds=20)  # config COMMAND_ORPHAN_AFTER_S
LOST_JOB_AFTER = timedelta(seconds=30)  # config COMMAND_LOST_JOB_AFTER_S
WAITING_JOB_STATES = ("queued", "scheduled", "deferred")
HEARTBEAT_TABLES = ("commands", "report_exports")


def setting(name: str, default: timedelta | float) -> Any:
    """A deadline or interval from the app config (seconds), else the default."""
    value = current_app.config.get(name)
    if value is None:
        return default
    return timedelta(seconds=float(value)) if isinstance(default, timedelta) else float(value)


def orphan_after() -> timedelta:
    """How long an owner may stay silent before its work is taken over."""
    return setting("COMMAND_ORPHAN_AFTER_S", ORPHAN_AFTER)


def worker_id() -> str:
    """This process, as an owner: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@contextmanager
def heartbeat(table: str, row_id: int, owner: str, every: float | None = None) -> Iterator[None]:
    """Renew ``heartbeat_at`` of a row this process owns from a thread while the block runs."""
    if table not in HEARTBEAT_TABLES:
        raise ValueError(f"no heartbeat for table {table!r}")
    from ..db import service_session

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    every = every or setting("COMMAND_HEARTBEAT_S", HEARTBEAT_S)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                with app.app_context(), service_session() as session:
                    session.execute(text(f"UPDATE {table} SET heartbeat_at = now() WHERE id = :id AND owner = :o"),
                                    {"id": row_id, "o": owner})
            except Exception as err:  # the database may blink; the next beat tries again
                log.warning("heartbeat of %s %s failed: %s", table, row_id, err)

    thread = threading.Thread(target=beat, name=f"heartbeat-{table}-{row_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(2)


def _job_waiting(job_id: str | None) -> bool:
    """Whether rq still holds the job as waiting to run (queued, scheduled or deferred)."""
    if not job_id:
        return False
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    from ..redis_conn import get_redis

    try:
        status = Job.fetch(job_id, connection=get_redis()).get_status(refresh=False)
    except NoSuchJobError:
        return False
    return str(getattr(status, "value", status)) in WAITING_JOB_STATES


def sweep(session: Session, now: datetime | None = None) -> dict[str, list[int]]:
    """Resolve commands whose owner died or whose rq job was lost (any group; service session)."""
    from .service import transition

    now = now or utcnow()
    silent, lost_after = orphan_after(), setting("COMMAND_LOST_JOB_AFTER_S", LOST_JOB_AFTER)
    dead = session.execute(
        select(Command).where(Command.state == "sent",
                              or_(Command.heartbeat_at < now - silent,
                                  Command.heartbeat_at.is_(None) & (Command.sent_at < now - silent)))
        .with_for_update(skip_locked=True)).scalars().all()
    for command in dead:
        owner = command.owner or "an unknown worker"
        transition(session, command, "queued", actor="sweep",
                   error=failure("command.orphaned", owner=owner),
                   detail={"owner": owner, "heartbeat_at": command.heartbeat_at.isoformat()
                           if command.heartbeat_at else None})
        command.verify_first, command.owner, command.job_id = True, None, None
    lost = session.execute(
        select(Command).where(Command.state == "queued", Command.enqueued_at < now - lost_after)
        .order_by(Command.id).limit(1000).with_for_update(skip_locked=True)).scalars().all()
    lost = [c for c in lost if not _job_waiting(c.job_id)]
    for command in lost:
        log.warning("command %s: its rq job %s is gone; queueing it again", command.id, command.job_id)
        command.enqueued_at, command.job_id = None, None
    return {"orphaned": [c.id for c in dead], "lost": [c.id for c in lost]}
