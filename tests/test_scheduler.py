"""The scheduler enqueues each periodic job once per period, and jobs run inside an app context."""

from __future__ import annotations

from rq import SimpleWorker

from meterhub.jobs import run
from meterhub.redis_conn import get_queue, get_redis
from meterhub.scheduler import periodic_jobs, tick


def test_core_jobs_are_registered():
    names = {job.name for job in periodic_jobs()}
    assert {"timeseries.rollups", "timeseries.offline"} <= names


def test_each_job_is_enqueued_once_per_period_even_with_two_schedulers(app):
    jobs = [j for j in periodic_jobs() if j.name == "timeseries.offline"]
    with app.app_context():
        queue = get_queue("periodic")
        queue.empty()
        now = 1_800_000_000.0
        assert tick(app, jobs, now) == ["timeseries.offline"]
        assert tick(app, jobs, now + 1) == []  # same period, second scheduler or next second
        assert tick(app, jobs, now + jobs[0].interval) == ["timeseries.offline"]
        assert queue.count == 2
        # A real rq worker (same process) runs them against the test database.
        worker = SimpleWorker([queue], connection=get_redis())
        assert worker.work(burst=True)
        assert queue.count == 0
        assert len(queue.finished_job_registry) == 2
        queue.empty()


def test_job_runner_calls_dotted_path_in_app_context(app):
    with app.app_context():
        assert run("meterhub.timeseries.jobs.detect_offline_job") >= 0
