"""One elected rq scheduler for the whole platform, and the outbox drain, in every worker and scheduler process.

rq's own scheduler runs as a child of one worker and holds ``rq:scheduler-lock:<queue>`` for 61 s; a worker
that found the lock taken tries again only after its 10-minute maintenance interval. When the holder died
the lock outlived it and restarted workers ran with no scheduler: ``enqueue_in`` retries (command back-off,
notification retries) stayed in ``rq:scheduled…`` unserved. Here every process runs a
:class:`ScheduledJobs` thread; the one holding ``<ns>:rq:scheduler`` (TTL :data:`LOCK_TTL_S`, renewed every
second) moves due jobs to their queues and drains the job outbox. When it dies its lock expires within
:data:`LOCK_TTL_S` and any other live process takes over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import redis
from flask import Flask

log = logging.getLogger(__name__)
LOCK_TTL_S = 10
TICK_S = 1.0
DRAIN_EVERY_S = 5.0
_RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) "
          "end return 0")


class ScheduledJobs(threading.Thread):
    """Elects itself (or not) every second; the elected one enqueues due scheduled jobs and drains the outbox."""

    def __init__(self, app: Flask, queues: Sequence[str]) -> None:
        super().__init__(name="meterhub-scheduled-jobs", daemon=True)
        self.app, self.queues = app, list(queues)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stopping = threading.Event()
        self.leader = False
        self._last_drain = 0.0
        # clients of its own: an rq worker forks a work horse per job, and a horse must not inherit a pool
        # (or its lock) that this thread was using at the time of the fork
        self.client = redis.Redis.from_url(app.config["REDIS_URL"], socket_timeout=5)
        self._engine: Any = None

    def lock_key(self) -> str:
        from .redis_conn import redis_key

        return redis_key("rq", "scheduler", app=self.app)

    def elect(self, client: redis.Redis) -> bool:
        """Hold or take the scheduler lock; True while this process is the scheduler."""
        key = self.lock_key()
        held = client.eval(_RENEW, 1, key, self.token, LOCK_TTL_S) if self.leader else 0
        if not held:
            held = client.set(key, self.token, nx=True, ex=LOCK_TTL_S)
        if bool(held) != self.leader:
            log.info("rq scheduler: %s %s", self.token, "elected" if held else "lost the lock")
        self.leader = bool(held)
        return self.leader

    def tick(self, now: float) -> int:
        """One round: elect, move due jobs, maybe drain the outbox; how many scheduled jobs were moved."""
        from rq import Queue
        from rq.registry import ScheduledJobRegistry

        from .redis_conn import redis_key

        client = self.client
        if not self.elect(client):
            return 0
        moved = 0
        for name in self.queues:
            queue = Queue(redis_key("q", name, app=self.app), connection=client)
            registry = ScheduledJobRegistry(queue=queue)
            for job_id in registry.get_jobs_to_schedule(int(now)):
                job = queue.fetch_job(job_id)
                with client.pipeline() as pipe:
                    if job is not None:
                        queue._enqueue_job(job, pipeline=pipe, at_front=bool(job.enqueue_at_front))
                    registry.remove(job_id, pipeline=pipe)
                    pipe.execute()
                moved += 1
        if now - self._last_drain >= DRAIN_EVERY_S:
            self._last_drain = now
            self.drain_outbox()
        return moved

    def drain_outbox(self) -> int:
        """Move the jobs held in the outbox to rq (own engine, no pool: nothing for a horse to inherit)."""
        from sqlalchemy import create_engine
        from sqlalchemy.orm import Session
        from sqlalchemy.pool import NullPool

        from .outbox import drain

        if self._engine is None:
            self._engine = create_engine(self.app.config["SERVICE_DATABASE_URL"], poolclass=NullPool)
        with self.app.app_context(), Session(self._engine) as session, session.begin():
            return drain(session=session, connection=self.client)

    def run(self) -> None:
        import time

        while not self.stopping.wait(TICK_S):
            try:
                self.tick(time.time())
            except redis.RedisError as err:
                if self.leader:
                    log.warning("rq scheduler: Redis unreachable (%s); will try again", err)
                self.leader = False
            except Exception:
                log.exception("rq scheduler: a round failed; will try again")

    def stop(self) -> None:
        """Stop the thread and give the lock away at once."""
        self.stopping.set()
        if self.leader:
            try:
                self.client.eval("if redis.call('get', KEYS[1]) == ARGV[1] then "
                                         "return redis.call('del', KEYS[1]) end return 0", 1, self.lock_key(),
                                         self.token)
            except redis.RedisError:
                pass
            self.leader = False


def start(app: Flask, queues: Sequence[str] | None = None) -> ScheduledJobs:
    """Start the elector thread of this process for ``queues`` (default: every meterhub queue)."""
    from .redis_conn import QUEUES

    thread = ScheduledJobs(app, queues or QUEUES)
    thread.start()
    return thread
