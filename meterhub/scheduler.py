"""The scheduler process: enqueues the plugins' periodic jobs into rq when they are due.

Several schedulers may run (for availability); a Redis lock per job and period makes sure each run is
enqueued once. The jobs themselves run in any number of ``meterhub worker`` processes. A Redis fault never ends the process:
the tick is retried with back-off until Redis answers again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import click
import redis
from flask import Flask, current_app
from flask.cli import with_appcontext

from .collector.policy import Backoff
from .plugins import get_plugin_manager
from .redis_conn import get_queue, get_redis, redis_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    interval: int  # seconds
    callable: str  # dotted path
    queue: str = "periodic"  # own queue and worker: notifications or exports never delay charging


def periodic_jobs() -> list[PeriodicJob]:
    """Every job the installed plugins register, checked for duplicate names."""
    jobs: dict[str, PeriodicJob] = {}
    for batch in get_plugin_manager().hook.register_jobs():
        for item in batch or []:
            job = PeriodicJob(item["name"], int(item["interval"]), item["callable"], item.get("queue", "periodic"))
            if job.name in jobs:
                raise click.ClickException(f"Two plugins register a job named '{job.name}'; rename one.")
            jobs[job.name] = job
    return list(jobs.values())


def tick(app: Flask, jobs: list[PeriodicJob], now: float) -> list[str]:
    """Enqueue the jobs due at ``now``; returns their names."""
    client = get_redis(app)
    enqueued = []
    for job in jobs:
        slot = int(now // job.interval)
        if client.set(redis_key("sched", job.name, slot, app=app), "1", nx=True, ex=job.interval * 2):
            get_queue(job.queue, app).enqueue("meterhub.jobs.run", job.callable, job_timeout=max(job.interval, 60),
                                              result_ttl=3600, description=job.name)
            enqueued.append(job.name)
    return enqueued


@click.command("scheduler")
@click.option("--once", is_flag=True, help="Enqueue what is due now and exit.")
@with_appcontext
def scheduler_command(once: bool) -> None:
    """Enqueue periodic jobs (charging, rollups, offline detection...) when due."""
    app = current_app._get_current_object()
    jobs = periodic_jobs()
    log.info("scheduler: %d periodic jobs: %s", len(jobs), ", ".join(f"{j.name}/{j.interval}s" for j in jobs))
    retry = Backoff(first_s=1.0, max_s=30.0)
    if not once:
        from . import rqschedule

        rqschedule.start(app)  # scheduled rq jobs and the job outbox, when this process is elected
    while True:
        try:
            for name in tick(app, jobs, time.time()):
                log.info("enqueued %s", name)
        except redis.RedisError as err:  # Redis restarting: wait and go on, never exit
            wait = retry.next()
            (log.warning if retry.failures == 1 else log.debug)(
                "scheduler: Redis unavailable (%s: %s); retrying in %.0f s", type(err).__name__, err, wait)
            time.sleep(wait)
            continue
        if retry.failures:
            log.info("scheduler: Redis is back; enqueueing again")
            retry.reset()
        if once:
            return
        time.sleep(1.0)
