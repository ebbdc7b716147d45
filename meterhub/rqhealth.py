"""Watching rq's registries: abandoned jobs (their worker died) and failed jobs are counted, reported, trimmed.

rq leaves the job of a killed worker in its ``StartedJobRegistry`` until the job's timeout passes, and keeps
failed jobs for a year. The ``rq.watch`` periodic job moves abandoned jobs to the failed registry at once
(``cleanup``), drops failed jobs older than :data:`FAILED_KEEP_S`, and records a ``process_events`` row
(process ``rq``) when jobs were abandoned or new ones failed, so operators see it beside process restarts.
``meterhub jobs`` prints the counts per queue, and the job outbox.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

log = logging.getLogger(__name__)
FAILED_KEEP_S = 7 * 86400


def _registries(queue: Any) -> dict[str, Any]:
    from rq.registry import (DeferredJobRegistry, FailedJobRegistry, FinishedJobRegistry, ScheduledJobRegistry,
                             StartedJobRegistry)

    return {"started": StartedJobRegistry(queue=queue), "scheduled": ScheduledJobRegistry(queue=queue),
            "deferred": DeferredJobRegistry(queue=queue), "failed": FailedJobRegistry(queue=queue),
            "finished": FinishedJobRegistry(queue=queue)}


def counts() -> dict[str, dict[str, int]]:
    """Per queue: jobs waiting, started, scheduled, deferred, failed and finished."""
    from .redis_conn import QUEUES, get_queue

    out: dict[str, dict[str, int]] = {}
    for name in QUEUES:
        queue = get_queue(name)
        out[name] = {"queued": queue.count, **{k: r.count for k, r in _registries(queue).items()}}
    return out


def watch(now: float | None = None) -> dict[str, dict[str, int]]:
    """Periodic job: fail abandoned jobs now, trim old failures, report what changed; returns per queue."""
    from rq.defaults import DEFAULT_FAILURE_TTL
    from rq.registry import FailedJobRegistry, StartedJobRegistry

    from .redis_conn import QUEUES, get_queue, get_redis, redis_key

    now = now or time.time()
    client = get_redis()
    report: dict[str, dict[str, int]] = {}
    for name in QUEUES:
        queue = get_queue(name)
        failed, started = FailedJobRegistry(queue=queue), StartedJobRegistry(queue=queue)
        abandoned = int(client.zcount(started.key, 0, now))  # their worker stopped heartbeating
        started.cleanup()  # -> failed, as AbandonedJobError
        # a failed job's score is when it failed + its failure TTL (rq's default unless a job set its own)
        old = client.zrangebyscore(failed.key, 0, now - FAILED_KEEP_S + DEFAULT_FAILURE_TTL)
        for job_id in old[:1000]:
            failed.remove(job_id.decode() if isinstance(job_id, bytes) else job_id, delete_job=True)
        seen_key = redis_key("rq", "watch", name, "failed")
        last_seen = int(client.get(seen_key) or 0)
        total = failed.count
        client.set(seen_key, total)
        report[name] = {"abandoned": abandoned, "failed": total, "new_failed": max(total - last_seen, 0),
                        "trimmed": len(old[:1000])}
        if abandoned or total > last_seen:
            _record(name, report[name])
    return report


def _record(queue: str, detail: dict[str, int]) -> None:
    from .process_events import record

    event = "jobs_abandoned" if detail["abandoned"] else "jobs_failed"
    log.warning("rq queue %s: %d abandoned, %d failed jobs (%d new)", queue, detail["abandoned"], detail["failed"],
                detail["new_failed"])
    record(current_app.config["SERVICE_DATABASE_URL"], "rq", event, {"queue": queue, **detail})


@click.command("jobs")
@with_appcontext
def jobs_command() -> None:
    """Show rq job counts per queue (waiting, started, scheduled, failed...) and the job outbox."""
    from .db import service_session
    from .outbox import pending

    rows = counts()
    keys = ("queued", "started", "scheduled", "deferred", "failed", "finished")
    click.echo(f"{'queue':<10}" + "".join(f"{k:>11}" for k in keys))
    for name, numbers in rows.items():
        click.echo(f"{name:<10}" + "".join(f"{numbers[k]:>11}" for k in keys))
    with service_session() as session:
        click.echo(f"outbox: {pending(session)} job(s) waiting for Redis")
