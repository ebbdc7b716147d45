"""``meterhub audit-verify`` and ``meterhub audit-anchor``."""

from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext
from sqlalchemy import select


def _groups(session, group_code: str | None) -> list:  # noqa: ANN001
    from .models import Group

    stmt = select(Group).order_by(Group.id)
    if group_code:
        stmt = stmt.where(Group.code == group_code)
    groups = session.execute(stmt).scalars().all()
    if group_code and not groups:
        raise click.ClickException(f"No group with code '{group_code}'.")
    return groups


@click.command("audit-verify")
@click.option("--group", "group_code", default=None, help="Group code (default: every group).")
@with_appcontext
def audit_verify_command(group_code: str | None) -> None:
    """Verify the audit chains with the audit key and checkpoints; exit 1 naming every broken entry."""
    from ..db import service_session
    from .audit_chain import verify

    broken = False
    with service_session() as session:
        for group in _groups(session, group_code):
            report = verify(session, group.id)
            anchor = report.checkpoint
            anchored = f"checkpoint #{anchor.seq} of {anchor.at}" if anchor else "no checkpoint yet"
            if report.ok:
                click.echo(f"{group.code}: {report.checked} entries, chain intact ({anchored})")
                continue
            broken = True
            click.echo(f"{group.code}: BROKEN at entry {report.first_broken_id}: {report.reason}")
            for problem in report.problems[1:]:
                click.echo(f"{group.code}:   {problem.kind}: {problem.message}")
            click.echo(f"{group.code}: {len(report.problems)} problem(s) in {report.checked} entries ({anchored})")
    if broken:
        sys.exit(1)


@click.command("audit-anchor")
@with_appcontext
def audit_anchor_command() -> None:
    """Checkpoint the head of every group's audit chain now (the scheduler does it every minute)."""
    from .audit_anchor import anchor_dir, anchor_job

    moved = anchor_job()
    click.echo(f"{moved} group checkpoint(s) written to {anchor_dir()}")
