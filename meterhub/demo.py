"""``meterhub run``: the whole platform in one process tree on embedded defaults, with a simulated fleet.

Resolves PostgreSQL, Redis and MQTT (configured URLs, else real embedded servers with data under
``instance/``), applies migrations, seeds the demo group, starts the simulators, rq workers (one per queue,
so commands waiting on a hung gateway never hold up charging and offline detection), scheduler and
collectors as supervised child processes (a child that dies is restarted with back-off and recorded in
``process_events``), serves the console from a supervised ``meterhub web`` child, and stops everything on
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import click
from sqlalchemy.engine import make_url

from . import services
from . import process_events
from .supervisor import Supervisor

log = logging.getLogger(__name__)
#: The workers of ``meterhub run`` and the queues each serves (most urgent first): one per queue, so commands
#: waiting on a hung gateway or a flood of notifications never hold up charging, and a spare that serves every
#: queue in order of urgency, so a rollup runs only when nothing else waits and never delays an export.
WORKER_QUEUES = {"commands": ("commands",), "periodic": ("periodic",), "default": ("default",),
                 "reports": ("reports",), "bulk": ("commands", "default", "reports", "periodic", "bulk")}
FLEET_PORT = int(os.environ.get("METERHUB_DEMO_FLEET_PORT", "15020"))
DIALIN_PORT = int(os.environ.get("METERHUB_DEMO_DIALIN_PORT", str(FLEET_PORT + 10)))


def _resolve_services(instance: Path) -> dict[str, str]:
    """Configured URLs win; otherwise embedded servers (data kept under ``instance/``)."""
    pg = services.resolve_postgres(os.environ.get("METERHUB_DATABASE_URL"), instance, allow_local=False)
    redis = services.resolve_redis(os.environ.get("METERHUB_REDIS_URL"), instance, allow_local=False)
    db_url = pg.url
    if pg.source != "configured":
        db_url = make_url(pg.url).set(database="meterhub").render_as_string(hide_password=False)
    os.environ["METERHUB_DATABASE_URL"] = db_url
    from .app import create_app

    # The embedded broker signs gateways in against their password hashes, read as the service role.
    auth_db = create_app().config["SERVICE_DATABASE_URL"]
    mqtt = services.resolve_mqtt(os.environ.get("METERHUB_MQTT_URL"), instance, allow_local=False,
                                 auth_database_url=auth_db)
    for svc in (pg, redis, mqtt):
        log.info("%s: %s (%s)", svc.name, services.mask_url(svc.url), svc.source)
    return {"METERHUB_DATABASE_URL": db_url, "METERHUB_REDIS_URL": redis.url, "METERHUB_MQTT_URL": mqtt.url}


def _wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None or time.time() > deadline:
            raise click.ClickException(f"the simulated fleet did not start (no {path}).")
        time.sleep(0.2)


def _optional_commands() -> list[tuple[str, list[str]]]:
    """Background services whose commands are installed (collector, MQTT ingest)."""
    from .app import create_app

    names = set(create_app().cli.list_commands(click.Context(click.Group())))
    wanted = [("collector", ["collector"]), ("mqtt-ingest", ["mqtt-ingest"])]
    return [(name, args) for name, args in wanted if name in names]


@click.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--no-fleet", is_flag=True, help="Do not start the simulated devices.")
@click.option("--collector-interval", type=float, default=None,
              help="Poll every meter this often (seconds) instead of the properties' intervals (tests, demos).")
@click.option("--no-history", is_flag=True, help="Skip storing the simulated meters' past year (a faster start).")
@click.option("--web-processes", type=click.IntRange(1, 64), default=1, show_default=True,
              envvar="METERHUB_WEB_PROCESSES",
              help="Web processes sharing the port (SO_REUSEPORT); one process serves pages on one core.")
def demo_command(host: str, port: int, no_fleet: bool, collector_interval: float | None, no_history: bool,
                 web_processes: int) -> None:
    """Start the whole platform with simulated devices (Ctrl-C stops everything)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    instance = Path(os.environ.get("METERHUB_INSTANCE_PATH") or Path.cwd() / "instance").resolve()
    instance.mkdir(parents=True, exist_ok=True)
    os.environ["METERHUB_INSTANCE_PATH"] = str(instance)
    children = Supervisor()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # same order as Ctrl-C: the children, then the servers
    try:
        os.environ.update(_resolve_services(instance))
        from flask_migrate import upgrade

        from .app import create_app

        app = create_app()
        _demo_addresses(app, instance, host, port)
        with app.app_context():
            upgrade(directory=str(Path(__file__).parent / "migrations"))
        fleet_file = instance / "demo-fleet.json"
        if not no_fleet:
            fleet_file.unlink(missing_ok=True)
            sim = children.start("simulators", "simulate", "--gateways", "3", "--devices", "4",
                                 "--driver", "acrel_adf300,acrel_dtsd1352,water_valve",
                                 "--base-port", str(FLEET_PORT), "--onboarding-file", str(fleet_file), "--installed")
            _wait_for_file(fleet_file, sim)
        with app.app_context():
            _seed(app, None if no_fleet else fleet_file, history=not no_history)
        seeded_at = datetime.now(timezone.utc)
        service_url = app.config["SERVICE_DATABASE_URL"]
        children.on_event = lambda name, event, detail: process_events.record(service_url, name, event, detail)
        # the web and the collector first: on a small machine the processes that start together share the CPU
        shared = ["--reuse-port"] if web_processes > 1 else []
        for n in range(1, web_processes + 1):  # children too: each restarted if it dies
            children.start("web" if n == 1 else f"web-{n}", "web", "--host", host, "--port", str(port), *shared)
        for name, args in _optional_commands():
            if name == "collector" and collector_interval:
                args = [*args, "--interval", str(collector_interval), "--stagger", str(min(collector_interval, 60))]
            children.start(name, *args)
        if not no_fleet:  # a 4G meter that dials in, and the listener it dials
            children.start("dialin", "dialin", "--host", "127.0.0.1", "--port", str(DIALIN_PORT))
            from .demo_seed import DEMO_4G_SERIAL

            children.start("sim-4g", "simulate-4g", "--server", f"127.0.0.1:{DIALIN_PORT}", "--serial", DEMO_4G_SERIAL)
        for name, queues in WORKER_QUEUES.items():
            children.start(f"worker-{name}", "worker", *(arg for q in queues for arg in ("--queue", q)))
        children.watch()
        _banner(host, port)
        if not no_fleet:  # nothing polled the meters while the history was stored: let the collector go first
            _await_first_poll(service_url, seeded_at)
        children.start("scheduler", "scheduler")  # its offline check judges meters the collector has had a go at
        while True:  # the supervisor thread does the work; SIGTERM / Ctrl-C end this wait
            time.sleep(3600)
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        children.stop()
        services.stop_all()


def _await_first_poll(service_url: str, since: datetime, timeout_s: float = 120) -> None:
    """Wait (at most ``timeout_s``) until the collector has read every polled meter since ``since``.

    Storing the demo's year of history takes minutes on a small machine, longer than the offline window of its
    one-minute reading interval, and nothing polls meanwhile: the scheduler's offline check, started before the
    collector's first round, took every meter for offline (offline and communication-fault alarms raised and
    cleared a minute later)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(service_url)
    deadline, waiting = time.monotonic() + timeout_s, None
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                waiting = conn.execute(text(
                    "SELECT count(*) FROM meters m JOIN devices d ON d.id = m.device_id "
                    "JOIN gateways g ON g.id = d.gateway_id LEFT JOIN meter_latest l ON l.meter_id = m.id "
                    "WHERE m.active AND g.enabled AND g.host <> '' AND (l.good_ts IS NULL OR l.good_ts < :since)"),
                    {"since": since}).scalar()
            if not waiting:
                return
            time.sleep(2)
        log.warning("%s meters not read %d s after the start; the offline check starts anyway", waiting, timeout_s)
    finally:
        engine.dispose()


def _demo_addresses(app, instance: Path, host: str, port: int) -> None:  # noqa: ANN001
    """Unless configured: the demo's public address is where it serves (payment notify URLs come from it, never
    from a request), and sign-in codes go to a development SMS outbox file (the demo has no SMS gateway)."""
    if not app.config.get("PUBLIC_BASE_URL"):
        app.config["PUBLIC_BASE_URL"] = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        # the web and the workers are child processes: they read it from the environment (without it the
        # portal's "Pay" answered "Cannot take online payments: set PUBLIC_BASE_URL")
        os.environ["METERHUB_PUBLIC_BASE_URL"] = app.config["PUBLIC_BASE_URL"]
    outbox = os.environ.setdefault("METERHUB_DEV_SMS_OUTBOX", str(instance / "sms-outbox.log"))
    app.config.setdefault("DEV_SMS_OUTBOX", outbox)
    log.info("public address %s; portal sign-in codes are written to %s", app.config["PUBLIC_BASE_URL"],
             app.config["DEV_SMS_OUTBOX"])


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _seed(app, fleet_file: Path | None, history: bool = True) -> None:  # noqa: ANN001
    from .db import service_session
    from .demo_seed import (
        DEMO_4G_SERIAL, load_fleet, onboard_dialin_meter, onboard_fleet, seed_history, seed_prepaid, seed_tenancy,
    )

    with service_session() as session:
        group = seed_tenancy(session)
        if fleet_file is not None:
            fleet = load_fleet(fleet_file)
            created = onboard_fleet(session, group, fleet)
            log.info("demo fleet: %d devices onboarded (each read before saving)", created)
            if onboard_dialin_meter(session, group):
                log.info("demo fleet: a 4G meter onboarded by its identity %s; it dials in when started",
                         DEMO_4G_SERIAL)
            log.info("demo accounts: %d opened with a first top-up", seed_prepaid(session, group))
            if history:
                log.info("demo history: %d past readings of the simulated meters stored and rolled up",
                         seed_history(session, group, fleet))


def _banner(host: str, port: int) -> None:
    from .demo_seed import DEMO_OPERATORS, DEMO_PORTAL

    lines = [f"meterhub is running: http://{host}:{port}/", "console logins (username / password, role):"]
    lines += [f"  {u:<12} {p:<18} {r}" for u, p, r, _ in DEMO_OPERATORS]
    lines += [f"tenant portal: http://{host}:{port}/portal/  (phone {DEMO_PORTAL[0]} / password {DEMO_PORTAL[1]})"]
    lines.append("Ctrl-C stops everything.")
    click.echo("\n".join(lines), err=False)


@click.command("seed-demo")
@click.option("--fleet-file", type=click.Path(exists=True, path_type=Path), default=None,
              help="Onboard the devices listed by `meterhub simulate --onboarding-file`.")
def seed_demo_command(fleet_file: Path | None) -> None:
    """Create the demo group (idempotent) and optionally onboard a simulated fleet."""
    from flask import current_app

    from flask.cli import ScriptInfo

    app = click.get_current_context().ensure_object(ScriptInfo).load_app()
    with app.app_context():
        _seed(current_app, fleet_file)
    click.echo("demo group ready")
