"""Benchmark (issue 21 item 5): a report export requested while a full usage rollup runs is done before it.

    .venv/bin/python -m bench.bench_queues [--meters 300] [--days 90]

A throwaway database gets ``meters`` meters with ``days`` of hourly readings and no rollups; the workers of
``meterhub run`` start as real processes (``demo.WORKER_QUEUES``: one per queue and the spare serving every
queue, most urgent first). The full rollup (``timeseries.rollups`` with no watermark: every reading) is put
on its queue as the scheduler does; once a worker runs it, an xlsx export of the daily usage report is
requested. Reported: the rollup's time, the export's time from request to file, their ratio (goal ≤ 0.5: the
export does not wait for the rollup) and whether the export was done before the rollup ended. Merged into
bench/results.json ("queues").
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.common import BENCH_INSTANCE, print_table, ratio_goal, throwaway_database, write_results

log = logging.getLogger("bench")
ROOT = Path(__file__).resolve().parent.parent
END = date.today()
LOAD = [
    "INSERT INTO groups (name, code, timezone, modules, created_at) VALUES ('Bench', 'bench', 'Asia/Shanghai', "
    "'{}', now())",
    "INSERT INTO properties (name, code, address, timezone, reading_interval_min, group_id, created_at) "
    "SELECT 'Bench mall', 'P1', '', 'Asia/Shanghai', 60, id, now() FROM groups WHERE code = 'bench'",
    "INSERT INTO buildings (property_id, name, group_id) SELECT id, 'B1', group_id FROM properties",
    "INSERT INTO floors (property_id, building_id, level, name, group_id) SELECT property_id, id, 1, '1F', group_id "
    "FROM buildings",
    "INSERT INTO rooms (property_id, building_id, floor_id, number, name, kind, area_m2, group_id) "
    "SELECT f.property_id, f.building_id, f.id, lpad(r::text, 4, '0'), '', 'shop', 30, f.group_id "
    "FROM floors f, generate_series(1, :meters) r",
    "INSERT INTO gateways (property_id, name, host, port, framing, bus, enabled, status, fault_count, group_id, "
    "created_at) SELECT p.id, 'gw1', '127.0.0.1', 502, 'modbus-rtu-over-tcp', '{}', true, 'online', 0, "
    "p.group_id, now() FROM properties p",
    "INSERT INTO devices (property_id, gateway_id, driver_key, address, serial, config, status, fault_count, "
    "group_id, created_at) SELECT r.property_id, (SELECT min(id) FROM gateways), 'acrel_dtsd1352', "
    "r.id::text, 'S' || r.id, '{}', 'online', 0, r.group_id, now() FROM rooms r",
    "INSERT INTO meters (property_id, device_id, room_id, channel, utility, name, status, keep_power, active, "
    "group_id, created_at) SELECT d.property_id, d.id, d.address::bigint, 1, 'electricity', 'M' || d.id, 'online', "
    "false, true, d.group_id, now() FROM devices d",
    "INSERT INTO readings (group_id, meter_id, ts, quality, energy_kwh) SELECT m.group_id, m.id, "
    "CAST(:end AS date)::timestamp AT TIME ZONE 'Asia/Shanghai' - h * interval '1 hour', 0, "
    "1000 + (:hours - h) * (1.5 + (m.id % 5) * 0.1) FROM meters m, generate_series(1, :hours) h",
]


def load(admin_url: str, meters: int, days: int) -> int:
    """The fleet and its readings (no rollups yet); returns the number of readings."""
    engine = create_engine(admin_url)
    with engine.begin() as conn:
        for sql in LOAD:
            conn.execute(text(sql), {"meters": meters, "hours": days * 24, "end": END})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
        count = conn.execute(text("SELECT count(*) FROM readings")).scalar_one()
    engine.dispose()
    return int(count)


def start_workers(env: dict[str, str], workdir: Path) -> dict[str, subprocess.Popen]:
    """The workers of ``meterhub run``, as it starts them."""
    from meterhub.demo import WORKER_QUEUES

    procs = {}
    for name, queues in WORKER_QUEUES.items():
        args = [arg for q in queues for arg in ("--queue", q)]
        with (workdir / f"worker-{name}.log").open("wb") as out:
            procs[name] = subprocess.Popen([sys.executable, "-m", "meterhub", "worker", *args], env=env, stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    return procs


def wait_for(what: str, check, timeout: float, procs: dict[str, subprocess.Popen], workdir: Path) -> float:
    """Poll ``check()`` every 50 ms until true; the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while not check():
        dead = [n for n, p in procs.items() if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise RuntimeError(f"{what}: {'exited: ' + ', '.join(dead) if dead else 'timed out'}; logs in {workdir}")
        time.sleep(0.05)
    return time.monotonic()


def run(meters: int, days: int) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="meterhub-bench-queues-"))
    with throwaway_database() as admin_url:
        readings = load(admin_url, meters, days)
        namespace = f"bench-queues-{uuid.uuid4().hex[:8]}"
        os.environ.setdefault("METERHUB_REDIS_URL", "redis://127.0.0.1:6379/0")
        os.environ.update(METERHUB_DATABASE_URL=admin_url, METERHUB_INSTANCE_PATH=str(BENCH_INSTANCE),
                          METERHUB_REDIS_NAMESPACE=namespace, METERHUB_EXPORT_DIR=str(workdir))
        from meterhub.app import create_app
        from meterhub.db import service_session
        from meterhub.redis_conn import get_queue
        from meterhub.reports.exports import create_export, enqueue_export
        from meterhub.reports.filters import ReportFilter
        from meterhub.reports.models import ReportExport
        from meterhub.scheduler import periodic_jobs

        app = create_app()
        env = {k: v for k, v in os.environ.items()}
        procs = start_workers(env, workdir)
        try:
            with app.app_context():
                wait_for("workers", lambda: _registered(app, len(procs)), 180, procs, workdir)
                rollup = next(j for j in periodic_jobs() if j.name == "timeseries.rollups")
                # as the scheduler enqueues it (scheduler.tick), keeping the job to follow it
                job = get_queue(rollup.queue).enqueue("meterhub.jobs.run", rollup.callable, job_timeout=1800,
                                                      result_ttl=3600, description=rollup.name)
                started = wait_for("rollup started", lambda: job.get_status(refresh=True) != "queued", 120,
                                   procs, workdir)
                with service_session() as session:
                    group_id = session.execute(text("SELECT id FROM groups WHERE code = 'bench'")).scalar_one()
                    export = create_export(session, group_id, None, "usage",
                                           ReportFilter(group_id, END - timedelta(days=30), END))
                    export_id = export.id
                requested = time.monotonic()
                enqueue_export(export_id, group_id)

                def export_done() -> bool:
                    with service_session() as session:
                        return session.get(ReportExport, export_id).status in ("done", "failed")

                exported = wait_for("export", export_done, 600, procs, workdir)
                with service_session() as session:
                    status = session.get(ReportExport, export_id).status
                finished = wait_for("rollup", lambda: job.get_status(refresh=True) in ("finished", "failed"), 1800,
                                    procs, workdir)
                rollup_status = str(getattr(job.get_status(), "value", job.get_status()))
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            from meterhub.db import dispose_service_engines

            dispose_service_engines()
    rollup_s, export_s = finished - started, exported - requested
    return {"meters": meters, "days": days, "readings": readings, "rollup_s": round(rollup_s, 2),
            "rollup_status": rollup_status, "export_s": round(export_s, 2), "export_status": status,
            "export_done_before_rollup": exported < finished,
            "ratio_export_to_rollup": round(export_s / rollup_s, 3) if rollup_s else None,
            "workers": "meterhub run's: commands, periodic, default, reports, bulk (every queue in order)"}


def _registered(app, count: int) -> bool:
    """``count`` workers of this benchmark's namespace have registered with rq."""
    from rq import Worker

    from meterhub.redis_conn import get_redis, redis_key

    prefix = redis_key("q", "", app=app)
    workers = Worker.all(connection=get_redis())
    return sum(1 for w in workers if any(q.startswith(prefix) for q in w.queue_names())) >= count


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=300)
    parser.add_argument("--days", type=int, default=90)
    args = parser.parse_args()
    result = run(args.meters, args.days)
    goal = ratio_goal("export requested during a full rollup / the rollup", result["ratio_export_to_rollup"],
                      "<= 0.5", f"export {result['export_s']} s, rollup {result['rollup_s']} s")
    print_table("report export while a full rollup runs", [result])
    print_table("goal", [goal])
    write_results("queues", {**result, "goal": goal})
    if not result["export_done_before_rollup"] or result["export_status"] != "done":
        raise SystemExit("the export was not done before the rollup")


if __name__ == "__main__":
    main()
