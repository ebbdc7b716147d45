"""``meterhub status`` (processes, collectors, buses) and ``meterhub process-exited`` (systemd's hook)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import click
from flask import current_app
from flask.cli import with_appcontext


@click.command("status")
@click.option("--events", "limit", default=20, show_default=True, help="How many process events to show.")
@with_appcontext
def status_command(limit: int) -> None:
    """Show the collectors' heartbeats, gateways whose collector is down, and recent process exits/restarts."""
    from sqlalchemy import text

    from .collector.jobs import namespace
    from .collector.liveness import STALE_S, heartbeats
    from .db import service_session
    from .process_events import recent
    from .redis_conn import get_redis

    client = get_redis()
    click.echo("collectors:")
    try:
        keys = sorted(client.scan_iter(f"{namespace()}:collector:heartbeat:*"))
        for key in keys:
            state = json.loads(client.get(key) or b"{}")
            age = time.time() - float(state.get("at", 0))
            click.echo(f"  {state.get('owner')}: {state.get('buses')} buses, heartbeat {age:.0f} s ago, "
                       f"{state.get('buffered', 0)} readings buffered, {state.get('readings_stored', 0)} stored")
        if not keys:
            click.echo("  none running")
        beats = heartbeats(client, namespace())
    except Exception as err:  # Redis down: say so and go on with the database
        click.echo(f"  Redis unavailable: {err}")
        beats = {}
    now = datetime.now(UTC)
    with service_session() as session:
        rows = session.execute(text(
            "SELECT id, name, status, collector_state, collector_seen_at FROM gateways "
            "WHERE collector_state IS NOT NULL ORDER BY id")).all()
        stale = [r for r in rows if r.collector_state == "down"]
        click.echo(f"polled gateways: {len(rows)}; collector down: {len(stale)}")
        for r in stale:
            beat = beats.get(r.id)
            seen = beat[0] if beat else r.collector_seen_at
            ago = f"{(now - seen).total_seconds():.0f} s ago" if seen else "never"
            click.echo(f"  gateway {r.id} {r.name}: collector down (last heartbeat {ago}; stale after "
                       f"{STALE_S:.0f} s); gateway status {r.status}")
        click.echo("process events (newest first):")
        events = recent(session, limit)
        for e in events:
            click.echo(f"  {e.at:%Y-%m-%d %H:%M:%S} {e.host} {e.process} {e.event} {json.dumps(e.detail)}")
        if not events:
            click.echo("  none")


@click.command("process-exited")
@click.argument("process")
@click.option("--result", default="", help="systemd's $SERVICE_RESULT (success, exit-code, signal, ...).")
@click.option("--code", default="", help="systemd's $EXIT_CODE (exited, killed, dumped).")
@click.option("--status", "exit_status", default="", help="systemd's $EXIT_STATUS (a number or a signal name).")
@with_appcontext
def process_exited_command(process: str, result: str, code: str, exit_status: str) -> None:
    """Record that a unit's process ended (systemd ExecStopPost); a clean stop is not recorded."""
    from .process_events import record

    if result in ("", "success"):
        return
    record(current_app.config["SERVICE_DATABASE_URL"], process, "exited",
           {"result": result, "code": code, "status": exit_status, "by": "systemd (Restart=on-failure)"})
