"""Issue 22, "no orphaned work": the known relay state follows the meter, an export whose worker died is run
again or failed with the reason, and rq's abandoned and failed registries are watched."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import select

from meterhub.db import service_session
from meterhub.devices.models import Meter
from meterhub.models import utcnow
from meterhub.process_events import ProcessEvent
from meterhub.redis_conn import get_queue
from meterhub.reports.exports import recover_exports, run_export
from meterhub.reports.filters import ReportFilter
from meterhub.reports.models import ReportExport
from meterhub.timeseries.ingest import Reading, ingest
from tests.prepaid.conftest import add_meters


def test_relay_closed_follows_the_latest_reading(app, group):
    with app.app_context():
        with service_session() as s:
            meter_id = add_meters(s, group.group_id, group.property_id, group.gateway_id, group.room_id, 1)[0]
        now = utcnow().replace(microsecond=0)
        # the relay was opened with no command we know of (a worker died after the write, or by hand)
        ingest([Reading(group.group_id, meter_id, now - timedelta(minutes=1), {"energy_kwh": 10, "relay_closed": False})])
        with service_session() as s:
            assert s.get(Meter, meter_id).relay_closed is False  # was: still "closed" in the database
        ingest([Reading(group.group_id, meter_id, now, {"energy_kwh": 10.5, "relay_closed": True})])
        with service_session() as s:
            assert s.get(Meter, meter_id).relay_closed is True


def _export(app, group, **values) -> int:
    with app.app_context(), service_session() as s:
        params = ReportFilter(group_id=group.group_id, start=date(2026, 1, 1), end=date(2026, 2, 1)).to_params()
        export = ReportExport(group_id=group.group_id, report="sales", params=params, **values)
        s.add(export)
        s.flush()
        return export.id


def test_an_export_whose_worker_died_runs_again_then_fails_with_the_reason(app, group):
    stale = utcnow() - timedelta(minutes=5)
    export_id = _export(app, group, status="running", owner="host:4242", heartbeat_at=stale, attempts=1)
    with app.app_context():
        get_queue("reports").empty()
        assert recover_exports() == {"again": [export_id], "failed": []}
        with service_session() as s:
            export = s.get(ReportExport, export_id)
            assert export.status == "queued" and "host:4242" in export.error
        (job,) = get_queue("reports").get_jobs()
        assert job.kwargs == {"export_id": export_id}
        assert run_export(export_id) >= 0  # the retried job writes the file
        with service_session() as s:
            export = s.get(ReportExport, export_id)
            assert export.status == "done" and export.attempts == 2 and export.file_id
    twice = _export(app, group, status="running", owner="host:4243", heartbeat_at=stale, attempts=2)
    live = _export(app, group, status="running", owner="host:4244", heartbeat_at=utcnow(), attempts=1)
    with app.app_context():
        assert recover_exports() == {"again": [], "failed": [twice]}
        with service_session() as s:
            failed = s.get(ReportExport, twice)
            assert failed.status == "failed" and "stopped 2 times" in failed.error and failed.finished_at
            assert s.get(ReportExport, live).status == "running"  # its owner heartbeats: left alone


def test_abandoned_and_failed_jobs_are_watched(app):
    from rq.registry import FailedJobRegistry, StartedJobRegistry

    from meterhub import rqhealth

    with app.app_context():
        queue = get_queue("default")
        job = queue.enqueue("meterhub.jobs.run", "meterhub.rqhealth:counts")
        queue.remove(job)
        started = StartedJobRegistry(queue=queue)
        # the job of a worker killed with SIGKILL: started, its heartbeat long expired
        started.connection.zadd(started.key, {f"{job.id}:execution": 1})
        before = started.connection.zcard(FailedJobRegistry(queue=queue).key)
        report = rqhealth.watch()["default"]
        assert report["abandoned"] == 1 and report["new_failed"] >= 1
        assert job.id in FailedJobRegistry(queue=queue).get_job_ids()
        assert rqhealth.counts()["default"]["failed"] == before + 1
        with service_session() as s:
            event = s.execute(select(ProcessEvent).where(ProcessEvent.process == "rq")
                              .order_by(ProcessEvent.id.desc())).scalars().first()
            assert event.event == "jobs_abandoned" and event.detail["queue"] == "default"
        assert rqhealth.watch()["default"]["new_failed"] == 0  # reported once
    result = app.test_cli_runner().invoke(args=["jobs"])
    assert result.exit_code == 0, result.output
    assert "default" in result.output and "failed" in result.output and "outbox:" in result.output
