"""``meterhub timeseries-jobs``: the state of TimescaleDB's policies over readings and the aggregates."""

from __future__ import annotations

from datetime import datetime, timezone

import click
from flask.cli import with_appcontext


@click.command("timeseries-jobs")
@click.option("--watch", is_flag=True, help="Also run one watch round now: record failures, do failing work.")
@with_appcontext
def timeseries_jobs_command(watch: bool) -> None:
    """Show each TimescaleDB policy (compression, retention, aggregate refresh): last run, failures, error."""
    from ..db import service_engine
    from . import freshness, policies

    engine = service_engine()
    if not freshness.uses_timescale(engine):
        click.echo("plain PostgreSQL: usage comes from the rollup tables (job timeseries.rollups); no policies")
        return
    if watch:
        failing = policies.watch_policies(engine, datetime.now(timezone.utc))
        click.echo(f"watch round done: {len(failing)} failing polic{'y' if len(failing) == 1 else 'ies'} worked")
    with engine.connect() as conn:
        states = policies.policy_states(conn)
    click.echo(f"{'job':>5}  {'policy':<36} {'relation':<22} {'last run':<8} {'failures':>8}  last success")
    for s in states:
        success = s.last_success.isoformat(timespec="seconds") if s.last_success else "never"
        click.echo(f"{s.job_id:>5}  {s.proc:<36} {s.relation:<22} {s.last_status or '-':<8} {s.failures:>8}  "
                   f"{success}")
        if s.failing:
            click.echo(f"       FAILING: {s.error or 'no message'}")
