"""The one ``meterhub`` command line (a Flask CLI group)."""

from __future__ import annotations

import logging

import click
from flask.cli import FlaskGroup, with_appcontext

from .app import create_app


@click.group(cls=FlaskGroup, create_app=create_app, add_default_commands=False)
def main() -> None:
    """meterhub: prepaid electricity and water for properties."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _add_process_commands() -> None:
    """``run``/``demo`` resolve services before any app exists, so they hang on the group itself."""
    from flask.cli import routes_command, shell_command

    from .demo import demo_command

    main.add_command(demo_command, "run")
    main.add_command(demo_command, "demo")
    main.add_command(shell_command)
    main.add_command(routes_command)


@click.command("create-group")
@click.option("--name", required=True, help="Display name, e.g. 'Sunrise Property Group'.")
@click.option("--code", required=True, help="Short unique code: letters, digits, _ . -")
@click.option("--timezone", default="Asia/Shanghai", show_default=True)
@with_appcontext
def create_group_command(name: str, code: str, timezone: str) -> None:
    """Create a property group (a tenant)."""
    from .db import service_session
    from .errors import ValidationError
    from .tenants import audit, service

    try:
        with service_session() as session:
            group = service.create_group(session, name, code, timezone)
            audit.record(session, group.id, "group.create", actor="cli", object_type="group",
                         object_id=group.id, detail={"name": name, "code": code})
            group_id = group.id
    except ValidationError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"group {code} created with id {group_id}")


@click.command("create-operator")
@click.option("--group", "group_code", required=True, help="Group code.")
@click.option("--username", required=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--role", required=True, type=click.Choice(
    ["group_admin", "group_finance", "property_manager", "cashier", "electrician", "auditor"]))
@click.option("--name", default="")
@click.option("--property", "property_codes", multiple=True, help="Property code in scope (repeatable).")
@click.option("--all-properties", is_flag=True, help="Scope over the whole group.")
@with_appcontext
def create_operator_command(group_code: str, username: str, password: str, role: str, name: str,
                            property_codes: tuple[str, ...], all_properties: bool) -> None:
    """Create an operator who signs in to the console."""
    from sqlalchemy import select

    from .db import service_session
    from .errors import ValidationError
    from .tenants import audit, service
    from .tenants.models import Group, Property

    try:
        with service_session() as session:
            group = session.execute(select(Group).where(Group.code == group_code)).scalar()
            if group is None:
                raise click.ClickException(f"No group with code '{group_code}'. Create it with `meterhub create-group`.")
            props = session.execute(select(Property).where(Property.group_id == group.id,
                                                           Property.code.in_(property_codes))).scalars().all()
            missing = set(property_codes) - {p.code for p in props}
            if missing:
                raise click.ClickException(f"Unknown property code(s) in {group_code}: {', '.join(sorted(missing))}")
            op = service.create_operator(session, group.id, username, password, role, name, all_properties,
                                         [p.id for p in props])
            audit.record(session, group.id, "operator.create", actor="cli", object_type="operator",
                         object_id=op.id, detail={"username": op.username, "role": role})
    except ValidationError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"operator {username} created")


@click.command("worker")
@click.option("--queue", "queues", multiple=True, default=("commands", "default", "reports", "periodic", "bulk"),
              show_default=True, help="A queue to serve (repeat it); served most urgent first, whatever the order "
              "given: commands, default, reports, periodic, bulk.")
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
@with_appcontext
def worker_command(queues: tuple[str, ...], burst: bool) -> None:
    """Run an rq worker for the given queues (start as many as you like, on any host).

    Between two jobs the worker takes the most urgent waiting one: a command or a notification before an
    export, an export before a periodic job, any of them before a rollup (the ``bulk`` queue).

    The worker outlives Redis restarts: when rq gives up on a lost connection the worker waits with back-off
    and starts again; it ends only on SIGTERM/SIGINT (or, with ``--burst``, when the queues are empty).
    """
    from flask import current_app

    from .redis_conn import by_urgency
    from .rq_worker import run_worker
    from .shared_keys import check_shared_keys

    check_shared_keys(current_app._get_current_object())
    run_worker(by_urgency(queues), burst=burst)


def register_commands(app) -> None:  # noqa: ANN001
    """Attach every command to ``app.cli`` (the ``meterhub`` group finds them there)."""
    from .demo import seed_demo_command
    from .tenants.audit_cli import audit_anchor_command, audit_verify_command
    from .devices.cli import plugins_command, simulate_4g_command, simulate_command
    from .collector.cli import collector_command, dialin_command
    from .mqtt_auth.cli import mqtt_group
    from .mqtt_ingest.cli import mqtt_ingest_command
    from .rqhealth import jobs_command
    from .scheduler import scheduler_command
    from .timeseries.cli import timeseries_jobs_command

    for command in (create_group_command, create_operator_command, audit_verify_command, worker_command,
                    plugins_command, simulate_command, seed_demo_command, scheduler_command,
                    mqtt_ingest_command, collector_command, audit_anchor_command, mqtt_group, jobs_command,
                    timeseries_jobs_command, dialin_command, simulate_4g_command):
        app.cli.add_command(command)
    from .status_cli import process_exited_command, status_command
    from .web_cli import web_command

    app.cli.add_command(status_command)
    app.cli.add_command(process_exited_command)
    app.cli.add_command(web_command)


_add_process_commands()
