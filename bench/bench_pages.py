"""Pages under load, served as ``make run`` serves them (issue 19 items 5–6): the account page, the tenant
portal home and the API's accounts list, each next to a trivial page of the same server in the same run.

    python -m bench.bench_pages [--rooms 2000] [--users 20] [--seconds 12]

A throwaway database is seeded like ``bench_dashboards`` (its ``seed``: one group, rooms in two properties, an open
prepaid account with top-ups per room, usage history, alarms, commands, and what the periodic jobs keep: the
per-property usage and the days-left forecasts); a portal user owns the first account and an API token acts for
the group admin. ``meterhub web`` (waitress, 8 threads: what ``meterhub run`` starts) serves
it on a free port; ``--users`` clients, each signed in with its own session, ask for one page in a closed loop
for ``--seconds`` after a warm-up. Every answer must be 200 with the page's own content. Reported per page: p50 /
p95 / max of the time each request took (localhost: the server's time plus a socket round trip), requests per
second, and p95 over the floor's p95. The dashboards and the room monitor are timed by ``bench_dashboards``.
Results merged into ``bench/results.json``: ``web.account_page_p95_ms``, ``web.portal_home_p95_ms``,
``web.api_accounts_p95_ms``, and the whole run (floor, detail, machine) as ``web.pages``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from bench.common import BENCH_INSTANCE, free_port, print_table, settle, throwaway_database, write_results

log = logging.getLogger("bench")
ROOT = Path(__file__).resolve().parent.parent
GOALS_MS = {"portal_home": 100, "account_page": 100}
PASSWORD = "bench password 42"
PORTAL_PASSWORD = "bench portal 42"


def _csrf(session: requests.Session, url: str) -> str:
    page = session.get(url, timeout=30).text
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def console_session(base: str, username: str) -> requests.Session:
    s = requests.Session()
    answer = s.post(f"{base}/login", data={"username": username, "password": PASSWORD,
                                           "csrf_token": _csrf(s, f"{base}/login")}, allow_redirects=False, timeout=30)
    if answer.status_code != 302:
        raise RuntimeError(f"console sign-in answered {answer.status_code}")
    return s


def portal_session(base: str, phone: str) -> requests.Session:
    s = requests.Session()
    answer = s.post(f"{base}/portal/login", data={"phone": phone, "password": PORTAL_PASSWORD,
                                                  "csrf_token": _csrf(s, f"{base}/portal/login")},
                    allow_redirects=False, timeout=30)
    if answer.status_code != 302:
        raise RuntimeError(f"portal sign-in answered {answer.status_code}: {answer.text[:200]}")
    return s


def load(sessions: list[requests.Session], url: str, must: str, seconds: float,
         headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Every session asks for ``url`` in a closed loop for ``seconds`` (after one warm-up request each)."""
    times: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    for s in sessions:
        s.get(url, headers=headers, timeout=60)
    stop_at = time.monotonic() + seconds

    def user(s: requests.Session) -> None:
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            answer = s.get(url, headers=headers, timeout=60, allow_redirects=False)
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                if answer.status_code != 200 or must not in answer.text:
                    errors.append(f"{answer.status_code} without {must!r}")
                else:
                    times.append(elapsed)

    started = time.monotonic()
    threads = [threading.Thread(target=user, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - started
    if errors or not times:
        raise RuntimeError(f"{url}: {len(errors)} wrong answers, first: {errors[:1]}")
    times.sort()
    return {"n": len(times), "p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 1), "max_ms": round(times[-1], 1),
            "req_s": round(len(times) / took, 1)}


def prepare(admin_url: str, rooms: int, meters_per_room: int = 2) -> dict[str, Any]:
    """Seed (as bench_dashboards), then a portal user for the first account and an API token for the admin."""
    from sqlalchemy import select

    from bench.bench_dashboards import seed, time_jobs
    from meterhub.api import tokens
    from meterhub.db import service_session
    from meterhub.modules.prepaid.models import PrepaidAccount
    from meterhub.portal import service as portal
    from meterhub.tenants.models import Operator

    ids = seed(admin_url, rooms, meters_per_room, 7)
    ids["jobs"] = time_jobs()  # what the periodic jobs keep: per-property usage, days-left forecasts
    with service_session() as s:
        account = s.execute(select(PrepaidAccount).where(PrepaidAccount.group_id == ids["group_id"],
                                                         PrepaidAccount.phone.is_not(None))
                            .order_by(PrepaidAccount.id).limit(1)).scalar_one()
        portal.set_password(s, portal.claim(s, ids["group_id"], account.phone), PORTAL_PASSWORD)
        operator = s.execute(select(Operator).where(Operator.username == ids["username"])).scalar_one()
        ids["token"] = tokens.create_token(s, operator, "bench", ["read"], actor="bench").secret
        ids.update(account_id=account.id, number=account.number, phone=account.phone)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=2000)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--web-processes", type=int, default=1,
                        help="meterhub web processes sharing the port (meterhub run --web-processes)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with throwaway_database() as admin_url:
        os.environ.setdefault("METERHUB_REDIS_URL", "redis://127.0.0.1:6379/0")
        os.environ.update(METERHUB_DATABASE_URL=admin_url, METERHUB_INSTANCE_PATH=str(BENCH_INSTANCE),
                          METERHUB_REDIS_NAMESPACE=f"bench-pages-{uuid.uuid4().hex[:8]}")
        from meterhub.app import create_app

        app = create_app()
        with app.app_context():
            ids = prepare(admin_url, args.rooms)
        settle(admin_url)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["METERHUB_API_RATE_LIMIT_PER_MINUTE"] = "1000000"  # the page's time is measured, not the token's limit
        shared = ["--reuse-port"] if args.web_processes > 1 else []
        webs = [subprocess.Popen([sys.executable, "-m", "meterhub", "web", "--port", str(port), *shared], env=env,
                                 cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
                for _ in range(args.web_processes)]
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if requests.get(f"{base}/login", timeout=5).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline or any(web.poll() is not None for web in webs):
                    raise RuntimeError("meterhub web did not answer within 120 s")
                time.sleep(0.5)
            time.sleep(5 if args.web_processes > 1 else 0)  # the others bind too (they start side by side)
            console = [console_session(base, ids["username"]) for _ in range(args.users)]
            tenants = [portal_session(base, ids["phone"]) for _ in range(args.users)]
            api = [requests.Session() for _ in range(args.users)]
            bearer = {"Authorization": f"Bearer {ids['token']}"}
            pages = {
                "floor": load([requests.Session() for _ in range(args.users)], f"{base}/login", 'name="csrf_token"',
                              args.seconds),
                "account_page": load(console, f"{base}/prepaid/accounts/{ids['account_id']}", ids["number"],
                                     args.seconds),
                "portal_home": load(tenants, f"{base}/portal/a/{ids['number']}", ids["number"], args.seconds),
                "api_accounts": load(api, f"{base}/api/v1/accounts?limit=50", '"next_after"', args.seconds, bearer),
            }
            pages["floor_again"] = load([requests.Session() for _ in range(args.users)], f"{base}/login",
                                        'name="csrf_token"', args.seconds)
        finally:
            for web in webs:
                web.send_signal(signal.SIGTERM)
            for web in webs:
                try:
                    web.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(web.pid, signal.SIGKILL)
        from meterhub.db import dispose_service_engines

        dispose_service_engines()
        with app.app_context():
            from meterhub.extensions import db

            db.engine.dispose()
    floor = max(pages["floor"]["p95_ms"], pages["floor_again"]["p95_ms"])
    labels = {"floor": "floor: sign-in form (first)", "floor_again": "floor: sign-in form (again)",
              "account_page": "console account page", "portal_home": "tenant portal home (its account)",
              "api_accounts": "API accounts list (50)"}
    rows = []
    for name, m in pages.items():
        goal = GOALS_MS.get(name)
        rows.append({"page": labels[name], **m, "x_floor_p95": round(m["p95_ms"] / floor, 2),
                     "goal_p95_ms": goal or "", "met": "" if goal is None else ("met" if m["p95_ms"] <= goal
                                                                                else "NOT MET")})
    print_table(f"Pages under load: {args.users} concurrent users, {args.seconds:g} s each, meterhub web "
                f"({args.web_processes} process(es), waitress, 8 threads each), {ids['rooms']} rooms", rows)
    write_results("web", part="pages", entries={
        "account_page_p95_ms": pages["account_page"]["p95_ms"], "portal_home_p95_ms": pages["portal_home"]["p95_ms"],
        "api_accounts_p95_ms": pages["api_accounts"]["p95_ms"], "floor_p95_ms": floor, "users": args.users,
        "web_processes": args.web_processes,
        "rooms": ids["rooms"], "detail": pages, "goals_p95_ms": GOALS_MS})


if __name__ == "__main__":
    main()
