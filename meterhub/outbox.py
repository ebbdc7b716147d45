"""The job outbox: rq jobs wanted while Redis was unreachable wait in PostgreSQL until it is back.

Money never waits for Redis: a top-up, a payment callback or a raised alarm commits in PostgreSQL, and the
jobs it hands to rq afterwards (notifications, callbacks, exports) go through :func:`enqueue_job`. When Redis
answers, the job is enqueued at once; when it does not, the job is held in ``job_outbox`` and
:func:`drain` (run by every scheduler and worker process, see ``meterhub.rqschedule``) enqueues it, oldest
first, when Redis answers again. Commands need no outbox: they are rows already, dispatched from the table.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import redis
from flask import has_request_context
from sqlalchemy import BigInteger, DateTime, Integer, String, Text, func, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, Session, mapped_column

from .db import service_session
from .extensions import db
from .models import TenantMixin, utcnow

log = logging.getLogger(__name__)


class OutboxJob(TenantMixin, db.Model):
    """One rq job (``meterhub.jobs.run(path, **kwargs)``) waiting for Redis."""

    __tablename__ = "job_outbox"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    queue: Mapped[str] = mapped_column(String(32), nullable=False)
    path: Mapped[str] = mapped_column(String(200), nullable=False)
    kwargs: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict, server_default="{}")
    description: Mapped[str] = mapped_column(String(200), nullable=False, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow,
                                                 server_default=func.now())
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    last_error: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")


def _put(queue: str, path: str, kwargs: dict[str, Any], description: str, connection: redis.Redis | None = None) -> str:
    """Enqueue on rq; ``retry_intervals`` (seconds, a list) becomes rq's ``Retry``."""
    from rq import Queue, Retry

    from .redis_conn import get_queue, redis_key

    kwargs = dict(kwargs)
    intervals = kwargs.pop("retry_intervals", None)
    if intervals:
        kwargs["retry"] = Retry(max=len(intervals), interval=list(intervals))
    target = Queue(redis_key("q", queue), connection=connection) if connection is not None else get_queue(queue)
    job = target.enqueue("meterhub.jobs.run", path, description=description or path, **kwargs)
    return str(job.id)


def hold(session: Session, group_id: int, queue: str, path: str, kwargs: dict[str, Any],
         description: str = "") -> OutboxJob:
    """Put the job in the outbox inside ``session``'s transaction (it is enqueued after the commit)."""
    row = OutboxJob(group_id=group_id, queue=queue, path=path, kwargs=kwargs, description=description[:200])
    session.add(row)
    session.flush()
    return row


def enqueue_job(queue: str, path: str, kwargs: dict[str, Any], *, group_id: int, description: str = "") -> str | None:
    """Enqueue ``path(**kwargs)`` now, or hold it in the outbox while Redis is unreachable; the job id or None.

    ``kwargs`` are the job's arguments plus rq options (``job_timeout``, ``result_ttl``, ``retry_intervals``),
    all JSON values."""
    try:
        return _put(queue, path, kwargs, description)
    except redis.RedisError as err:
        error = f"{type(err).__name__}: {err}"[:2000]
        if has_request_context():  # a web request holds it as the app role, under its group's RLS
            hold(db.session, group_id, queue, path, kwargs, description).last_error = error
            db.session.commit()
        else:
            with service_session() as session:
                hold(session, group_id, queue, path, kwargs, description).last_error = error
        log.warning("redis unreachable (%s): job %s held in the outbox until it is back", err, description or path)
        return None


def pending(session: Session) -> int:
    """How many jobs wait in the outbox (every group; service session)."""
    return int(session.execute(select(func.count()).select_from(OutboxJob)).scalar() or 0)


def drain(limit: int = 500, *, session: Session | None = None, connection: redis.Redis | None = None) -> int:
    """Enqueue held jobs, oldest first, until Redis fails again; returns how many went (service role).

    ``session`` and ``connection`` let a thread of a forking rq worker use clients of its own."""
    if session is None:
        with service_session() as own:
            return drain(limit, session=own, connection=connection)
    sent = 0
    rows = session.execute(select(OutboxJob).order_by(OutboxJob.id).limit(limit)
                           .with_for_update(skip_locked=True)).scalars().all()
    for row in rows:
        try:
            _put(row.queue, row.path, dict(row.kwargs), row.description, connection)
        except redis.RedisError as err:
            row.attempts += 1
            row.last_error = f"{type(err).__name__}: {err}"[:2000]
            break
        session.delete(row)
        sent += 1
    if sent:
        log.info("outbox: %d held job(s) enqueued", sent)
    return sent
