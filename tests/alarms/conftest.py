"""Alarm fixtures: a worker runner."""

from __future__ import annotations


def run_jobs(app, queue: str = "default", rounds: int = 10) -> int:
    """Run the queued jobs of ``queue`` in this process (rq SimpleWorker, burst, no fork) until it is empty,
    including retries scheduled with a zero interval; returns how many jobs ran."""
    from rq import SimpleWorker

    from meterhub.redis_conn import get_queue, get_redis

    done = 0
    with app.app_context():
        q = get_queue(queue)
        for _ in range(rounds):
            if not len(q):
                break
            done += len(q)
            SimpleWorker([q], connection=get_redis()).work(burst=True, with_scheduler=False)
        # leave the shared queue's registries as we found them (other tests count finished jobs)
        for registry in (q.finished_job_registry, q.failed_job_registry):
            for job_id in registry.get_job_ids():
                registry.remove(job_id, delete_job=True)
    return done
