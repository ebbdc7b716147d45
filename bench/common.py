"""Shared benchmark helpers: a throwaway database, a private Mosquitto, table printing, ``results.json``."""

from __future__ import annotations

import getpass
import json
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

log = logging.getLogger("bench")
RESULTS = Path(__file__).with_name("results.json")
MOSQUITTO = os.environ.get("METERHUB_MOSQUITTO", "/usr/sbin/mosquitto")


BENCH_INSTANCE = Path(__file__).resolve().parent / "instance"  # generated role passwords and audit key


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def low_port() -> int:
    """A TCP port below the kernel's ephemeral range (32768+), free on 127.0.0.1 right now: a broker restarted
    on it never finds it taken by an outgoing connection."""
    import random

    for port in random.sample(range(20000, 32768), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


class Mosquitto:
    """A private Mosquitto broker: persistence in a temp dir, unlimited queues, restartable on the same port.

    With ``auth``, anonymous clients are refused and users and topics come from ``passwd`` and ``acl`` in the
    work dir (as ``meterhub mqtt export-auth`` writes them; write them before ``start``, ``reload`` after)."""

    def __init__(self, workdir: Path | None = None, port: int | None = None, *, auth: bool = False) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="meterhub-mosquitto-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or low_port()
        self.conf = self.workdir / "mosquitto.conf"
        self.passwd, self.acl = self.workdir / "passwd", self.workdir / "acl"
        access = (f"allow_anonymous false\npassword_file {self.passwd}\nacl_file {self.acl}\n" if auth
                  else "allow_anonymous true\n")
        self.conf.write_text(
            # ``user``: when started as root Mosquitto would switch to "mosquitto", which cannot write here.
            f"user {getpass.getuser()}\nlistener {self.port} 127.0.0.1\n{access}"
            f"persistence true\npersistence_location {self.workdir}/\nautosave_interval 1\n"
            "max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 0\n"
            f"log_dest file {self.workdir}/mosquitto.log\n",
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        """Start (or restart) the broker and wait until it accepts connections."""
        if not Path(MOSQUITTO).exists():
            raise RuntimeError(f"Mosquitto not found at {MOSQUITTO}; set METERHUB_MOSQUITTO")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"Mosquitto did not start on port {self.port}; see {self.workdir}/mosquitto.log")

    def stop(self) -> None:
        """Stop gracefully (SIGTERM: the broker saves its persistent sessions and queued messages)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        """Re-read the password file and ACL (SIGHUP)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def throwaway_database(admin_url: str | None = None) -> Iterator[str]:
    """A fresh database migrated to head (admin URL); dropped afterwards."""
    admin_url = admin_url or os.environ.get("METERHUB_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"meterhub_bench_{uuid.uuid4().hex[:8]}"
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    from flask import Flask
    from flask_migrate import Migrate, upgrade

    from meterhub.config import DEFAULTS, finish
    from meterhub.extensions import db

    app = Flask("bench", root_path=str(Path(__file__).resolve().parent), instance_path=str(BENCH_INSTANCE))
    app.config.update(DEFAULTS)
    app.config["DATABASE_URL"] = url
    finish(app.config, app.instance_path)  # role passwords generated into bench/instance (see service_url)
    db.init_app(app)
    migrations = str(Path(__file__).resolve().parent.parent / "meterhub" / "migrations")
    Migrate(app, db, directory=migrations)
    with app.app_context():
        upgrade(directory=migrations)
        db.engine.dispose()
    try:
        yield url
    finally:
        admin = create_engine(make_url(admin_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                         {"d": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def settle(admin_url: str) -> None:
    """Start a measurement from a quiet server: VACUUM (ANALYZE) the throwaway database, then a checkpoint.

    Whatever the previous phase wrote would otherwise be vacuumed by autovacuum at a moment of its choosing,
    inside whichever phase comes next. In production the same work runs between charging runs (an interval
    apart) and alongside a steady ingest, not in bursts landing on one measurement."""
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("VACUUM (ANALYZE)"))
        conn.execute(text("CHECKPOINT"))
    engine.dispose()


def service_url(admin_url: str) -> str:
    """The service-role URL of the database at ``admin_url`` (password: the one throwaway_database gave it)."""
    from meterhub.config import DEFAULTS, role_url
    from meterhub.instance_secrets import instance_secret

    password = instance_secret(BENCH_INSTANCE, "service_db_password")
    return role_url(admin_url, DEFAULTS["SERVICE_DB_USER"], password)


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """Log a plain text table of ``rows`` (dicts with the same keys)."""
    if not rows:
        return
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(_cell(r.get(k))) for r in rows)) for k in keys}
    lines = [title, "  ".join(k.ljust(widths[k]) for k in keys), "  ".join("-" * widths[k] for k in keys)]
    lines += ["  ".join(_cell(r.get(k)).rjust(widths[k]) for k in keys) for r in rows]
    log.info("\n%s\n", "\n".join(lines))


def retried(what: str, run: Any, attempts: int = 3) -> tuple[Any, list[str]]:
    """``run()`` retried up to ``attempts`` times: (its result or None, the errors met). Never raises: a reference
    pass that times out on a slow machine is reported, not fatal."""
    errors: list[str] = []
    for attempt in range(1, attempts + 1):
        try:
            return run(), errors
        except Exception as err:  # noqa: BLE001 - any failure of a reference is reported, not raised
            errors.append(f"{type(err).__name__}: {err}"[:300])
            log.warning("%s failed (attempt %d/%d): %s", what, attempt, attempts, errors[-1])
    return None, errors


def ratio_goal(name: str, ratio: float | None, goal: str, absolute: str = "") -> dict[str, Any]:
    """One row of a goals table: the ratio to a floor measured in the same run, its goal (``"<= 1.1"`` or
    ``">= 0.8"``), met or not, and the absolute figure beside it."""
    met: bool | None = None
    if ratio is not None:
        op, _, bound = goal.partition(" ")
        met = ratio <= float(bound) if op == "<=" else ratio >= float(bound)
    return {"goal": name, "ratio": "n/a" if ratio is None else round(ratio, 3), "target": goal,
            "met": "n/a" if met is None else ("met" if met else "NOT MET"), "absolute": absolute}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def write_results(bench: str, entries: dict[str, Any], part: str | None = None) -> None:
    """Merge ``entries`` under ``bench`` into ``bench/results.json`` (other benches' entries are kept).

    With ``part``, several benchmark modules share the key ``bench`` (``web``: ``bench_pages`` and
    ``bench_dashboards``): each run goes to ``bench.part`` whole (with its time and machine), and its goal figures
    (``*_p95_ms`` but the floor's, whose floor is per run) are also copied to ``bench`` itself, where the stable keys
    such as ``web.room_monitor_p95_ms`` stay whichever module ran last."""
    data: dict[str, Any] = {}
    if RESULTS.exists():
        try:
            data = json.loads(RESULTS.read_text(encoding="utf-8"))
        except ValueError:
            log.warning("%s is not valid JSON; starting it afresh", RESULTS)
    run = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.platform(),
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
        **entries,
    }
    if part is None:
        data[bench] = run
    else:
        shared = data.get(bench) if isinstance(data.get(bench), dict) else {}
        shared.update({k: v for k, v in entries.items()
                       if k.endswith("_p95_ms") and not k.startswith("floor") and isinstance(v, int | float)})
        shared[part] = run
        data[bench] = shared
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log.info("results written to %s (%s)", RESULTS, bench)
