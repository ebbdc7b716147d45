"""An rq worker that outlives Redis restarts (``meterhub worker``).

rq's ``Worker.work()`` retries a lost connection while it waits for a job, but quits on a Redis error
anywhere else (heartbeat, maintenance, registering at start). :func:`run_worker` starts a fresh worker
after such an exit, with back-off (1, 2, 4 … 30 s), until the process is asked to stop (SIGTERM/SIGINT).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence

import redis

from .collector.policy import Backoff

log = logging.getLogger(__name__)


def run_worker(queues: Sequence[str], *, burst: bool = False, with_scheduler: bool = True) -> None:
    """Work the queues until SIGTERM/SIGINT; start again after Redis faults (inside an app context)."""
    from flask import current_app

    from . import rqschedule

    # The ORM is configured before any thread starts: a work horse forked while the scheduler thread held
    # SQLAlchemy's mapper-configuration lock would wait on that lock forever (seen on a job at worker start).
    from sqlalchemy.orm import configure_mappers

    configure_mappers()
    # scheduled jobs are served by the one elected process (rqschedule), not by rq's per-worker child
    elector = rqschedule.start(current_app._get_current_object()) if with_scheduler and not burst else None
    try:
        _work(queues, burst=burst, with_scheduler=with_scheduler)
    finally:
        if elector is not None:
            elector.stop()


def _work(queues: Sequence[str], *, burst: bool, with_scheduler: bool) -> None:
    from rq import Worker

    from .redis_conn import get_queue, get_redis

    stop = threading.Event()
    retry = Backoff(first_s=1.0, max_s=30.0)
    while not stop.is_set():
        worker: Worker | None = None
        try:
            worker = Worker([get_queue(q) for q in queues], connection=get_redis())
            worker.work(burst=burst, with_scheduler=with_scheduler and burst)
        except redis.RedisError as err:
            log.warning("worker: Redis unavailable (%s: %s)", type(err).__name__, err)
        if burst or (worker is not None and (worker._stop_requested or worker._shutdown_requested_date)):
            return
        _stop_on_signals(stop)
        wait = retry.next()
        log.warning("worker for %s stopped unexpectedly (Redis restarted or unreachable?); starting again in "
                    "%.0f s", ", ".join(queues), wait)
        stop.wait(wait)
        if worker is not None and worker.scheduler is not None and worker.scheduler._process is not None:
            worker.scheduler._process.join(0.1)
        if _healthy(get_redis()):
            retry.reset()


def _stop_on_signals(stop: threading.Event) -> None:
    """Between two workers, SIGTERM/SIGINT end the loop (rq's handlers belong to the worker that quit)."""

    def handler(signum: int, frame: object) -> None:
        log.info("worker: signal %d while waiting for Redis; stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _healthy(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
