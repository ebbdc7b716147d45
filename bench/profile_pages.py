"""Where a page's time goes: single requests in one process, profiled (issue 19 item 6).

    python -m bench.profile_pages [--rooms 2000] [--requests 20] [--keep NAME] [--pages account_page,portal_home]

Seeds a database as ``bench_pages`` does (kept under ``--keep`` to profile again without seeding; dropped
otherwise), then asks for each page through the app's test client: first ``--requests`` plain requests (mean and
p50 in ms, and the statements each runs), then the same number under pyinstrument (from PyPI; ``pip install
pyinstrument``), whose text profile is printed. Nothing is written to ``results.json``: timings under load are
``bench_pages``'s and ``bench_dashboards``'s.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url

from bench.common import BENCH_INSTANCE, settle, throwaway_database

log = logging.getLogger("bench")


def kept_database(name: str, rooms: int, meters_per_room: int = 2) -> tuple[str, dict[str, Any]]:
    """The database ``name`` (created, migrated and seeded the first time) and its ids."""
    admin_url = os.environ.get("METERHUB_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    ids_file = BENCH_INSTANCE / f"{name}.json"
    if ids_file.exists():
        _upgrade(url)  # the code may have moved on since the seed
        return url, json.loads(ids_file.read_text())
    admin = create_engine(make_url(admin_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()
    # throwaway_database migrates a fresh database; the rename keeps it past the block
    with throwaway_database(admin_url) as fresh:
        fresh_name = make_url(fresh).database
        admin = create_engine(make_url(admin_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{fresh_name}" RENAME TO "{name}"'))
        admin.dispose()
    ids = _seed(url, rooms, meters_per_room)
    ids_file.write_text(json.dumps(ids))
    return url, ids


def _upgrade(url: str) -> None:
    from flask import Flask
    from flask_migrate import Migrate, upgrade

    from meterhub.config import DEFAULTS, finish
    from meterhub.extensions import db

    app = Flask("bench", root_path=str(Path(__file__).resolve().parent), instance_path=str(BENCH_INSTANCE))
    app.config.update(DEFAULTS, DATABASE_URL=url)
    finish(app.config, app.instance_path)
    db.init_app(app)
    migrations = str(Path(__file__).resolve().parent.parent / "meterhub" / "migrations")
    Migrate(app, db, directory=migrations)
    with app.app_context():
        upgrade(directory=migrations)
        db.engine.dispose()


def _seed(url: str, rooms: int, meters_per_room: int = 2) -> dict[str, Any]:
    from bench.bench_pages import prepare
    from meterhub.app import create_app

    _environment(url)
    app = create_app()
    with app.app_context():
        ids = prepare(url, rooms, meters_per_room)
    settle(url)
    return ids


def _environment(url: str) -> None:
    os.environ.setdefault("METERHUB_REDIS_URL", "redis://127.0.0.1:6379/0")
    os.environ.setdefault("METERHUB_REDIS_NAMESPACE", f"bench-profile-{uuid.uuid4().hex[:8]}")
    os.environ.update(METERHUB_DATABASE_URL=url, METERHUB_INSTANCE_PATH=str(BENCH_INSTANCE),
                      METERHUB_API_RATE_LIMIT_PER_MINUTE="1000000")


def profile(url: str, ids: dict[str, Any], pages: list[str], requests: int, flat: bool = False) -> None:
    """Time, count and profile each page (test client, one process)."""
    from pyinstrument import Profiler

    from bench.bench_dashboards import _login
    from bench.bench_pages import PASSWORD, PORTAL_PASSWORD
    from meterhub.app import create_app

    _environment(url)
    app = create_app()
    console = app.test_client()
    _login(console, ids["username"], PASSWORD)
    tenant = app.test_client()
    page = tenant.get("/portal/login").get_data(as_text=True)
    import re

    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert tenant.post("/portal/login", data={"phone": ids["phone"], "password": PORTAL_PASSWORD,
                                              "csrf_token": token}).status_code == 302
    from meterhub.web_cli import freeze_startup_objects

    freeze_startup_objects()  # as ``meterhub web`` does once started
    urls = {
        "floor": (app.test_client(), "/login", 'name="csrf_token"', {}),
        "account_page": (console, f"/prepaid/accounts/{ids['account_id']}", ids["number"], {}),
        "portal_home": (tenant, f"/portal/a/{ids['number']}", ids["number"], {}),
        "api_accounts": (app.test_client(), "/api/v1/accounts?limit=50", '"next_after"',
                         {"Authorization": f"Bearer {ids['token']}"}),
        "dashboard_group": (console, "/", 'id="money"', {}),
        "dashboard_property": (console, f"/dashboard/properties/{ids['props'][0]}", 'id="money"', {}),
        "room_monitor": (console, "/prepaid/rooms", 'id="monitor-grid"', {}),
    }
    for name in pages:
        client, path, must, headers = urls[name]
        for _ in range(2):
            answer = client.get(path, headers=headers)
            assert answer.status_code == 200 and must in answer.get_data(as_text=True), (name, answer.status_code)
        seen: list[str] = []
        record = lambda *a: seen.append(a[2])  # noqa: E731
        event.listen(Engine, "before_cursor_execute", record)
        client.get(path, headers=headers)
        event.remove(Engine, "before_cursor_execute", record)
        times, cpu = [], []
        for _ in range(requests):
            started, started_cpu = time.perf_counter(), time.process_time()
            client.get(path, headers=headers)
            times.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - started_cpu) * 1000)
        profiler = Profiler(interval=0.0005)
        profiler.start()
        for _ in range(requests):
            client.get(path, headers=headers)
        profiler.stop()
        print(f"\n=== {name} {path}: {len(seen)} statements; wall mean {statistics.mean(times):.1f} ms, "
              f"p50 {statistics.median(times):.1f} ms; CPU mean {statistics.mean(cpu):.1f} ms; "
              f"load average {[round(x, 2) for x in os.getloadavg()]}")
        if flat:
            text_ = profiler.output_text(unicode=True, color=False, flat=True, flat_time="total")
            print("\n".join(text_.splitlines()[:60]))
            text_ = profiler.output_text(unicode=True, color=False, flat=True)
            print("\n".join(text_.splitlines()[:50]))
        else:
            print(profiler.output_text(unicode=True, color=False, show_all=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=2000)
    parser.add_argument("--meters-per-room", type=int, default=2, help="10 for the dashboards' 100,000 meters")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--keep", default="", help="keep the seeded database under this name and reuse it")
    parser.add_argument("--pages", default="floor,account_page,portal_home,api_accounts")
    parser.add_argument("--flat", action="store_true", help="functions by total and by own time, not the call tree")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pages = args.pages.split(",")
    if args.keep:
        url, ids = kept_database(args.keep, args.rooms, args.meters_per_room)
        profile(url, ids, pages, args.requests, args.flat)
        return
    with throwaway_database() as url:
        profile(url, _seed(url, args.rooms, args.meters_per_room), pages, args.requests, args.flat)


if __name__ == "__main__":
    main()
