"""Jobs by urgency (issue 21 item 5): one worker serves a command, a notification or an export before a rollup
that was queued earlier; the rollup is on the ``bulk`` queue; ``meterhub worker`` listens to every queue in order."""

from __future__ import annotations

import time

from rq.exceptions import NoSuchJobError
from rq.job import Job

from meterhub.redis_conn import QUEUES, by_urgency, get_queue, get_redis
from meterhub.scheduler import periodic_jobs, tick

WAIT_S = 1.5


def slow_bulk(seconds: float) -> str:
    """A long bulk job (stands for a rollup of a big history)."""
    time.sleep(seconds)
    return "bulk done"


def record(label: str) -> str:
    """A short job that someone waits for."""
    return label


def _empty(app) -> None:
    with app.app_context():
        for name in QUEUES:
            queue = get_queue(name)
            queue.empty()
            for registry in (queue.finished_job_registry, queue.failed_job_registry):
                for job_id in registry.get_job_ids():
                    try:
                        registry.remove(job_id, delete_job=True)
                    except NoSuchJobError:  # the job itself expired already: only its registry entry was left
                        registry.remove(job_id)


def test_queues_are_served_most_urgent_first():
    assert QUEUES == ("commands", "default", "reports", "periodic", "bulk")
    assert by_urgency(["bulk", "reports", "commands"]) == ["commands", "reports", "bulk"]
    assert by_urgency(["bulk", "bulk", "extra", "periodic"]) == ["periodic", "bulk", "extra"]


def test_rollups_go_to_the_bulk_queue(app):
    jobs = {job.name: job for job in periodic_jobs()}
    assert jobs["timeseries.rollups"].queue == "bulk"
    assert jobs["prepaid.charge"].queue == "periodic"
    _empty(app)
    with app.app_context():
        assert "timeseries.rollups" in tick(app, [jobs["timeseries.rollups"]], 1_900_000_000.0)
        assert get_queue("bulk").count == 1 and get_queue("periodic").count == 0
    _empty(app)


def test_one_worker_runs_an_export_and_a_command_before_a_bulk_job_queued_earlier(app, runner):
    """A single ``meterhub worker --burst`` (every queue): the bulk job was queued first, yet the export, the
    notification and the command finish before it starts."""
    _empty(app)
    with app.app_context():
        bulk = get_queue("bulk").enqueue("meterhub.jobs.run", "tests.test_queues:slow_bulk", seconds=WAIT_S)
        periodic = get_queue("periodic").enqueue("meterhub.jobs.run", "tests.test_queues:record", label="periodic")
        export = get_queue("reports").enqueue("meterhub.jobs.run", "tests.test_queues:record", label="export")
        notify = get_queue("default").enqueue("meterhub.jobs.run", "tests.test_queues:record", label="notify")
        command = get_queue("commands").enqueue("meterhub.jobs.run", "tests.test_queues:record", label="command")
    result = runner.invoke(args=["worker", "--burst"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        jobs = {name: Job.fetch(job.id, connection=get_redis())
                for name, job in (("bulk", bulk), ("periodic", periodic), ("export", export), ("notify", notify),
                                  ("command", command))}
        assert all(job.get_status() == "finished" for job in jobs.values()), {k: j.get_status() for k, j in
                                                                               jobs.items()}
        order = sorted(jobs, key=lambda name: jobs[name].started_at)
        assert order == ["command", "notify", "export", "periodic", "bulk"]
        assert jobs["export"].ended_at <= jobs["bulk"].started_at
        assert jobs["command"].ended_at <= jobs["bulk"].started_at
    _empty(app)


def test_explicit_queues_are_served_by_urgency_whatever_their_order(app, runner):
    _empty(app)
    with app.app_context():
        bulk = get_queue("bulk").enqueue("meterhub.jobs.run", "tests.test_queues:slow_bulk", seconds=0.1)
        export = get_queue("reports").enqueue("meterhub.jobs.run", "tests.test_queues:record", label="export")
    result = runner.invoke(args=["worker", "--burst", "--queue", "bulk", "--queue", "reports"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        first, second = (Job.fetch(j.id, connection=get_redis()) for j in (export, bulk))
        assert first.ended_at <= second.started_at
    _empty(app)
