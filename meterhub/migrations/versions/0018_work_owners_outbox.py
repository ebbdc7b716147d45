"""work owners and deadlines: command claims with heartbeats, export heartbeats, the job outbox

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 18:00:00

Every long-lived state has an owner and a deadline. A command job claims its row (``owner``, ``heartbeat_at``)
and heartbeats while it works; the sweep re-queues a claim whose heartbeat stopped (the worker died) and
resolves a ``sent`` one by reading the meter first (``verify_first``). ``job_id`` is the rq job that carries a
queued command, so a lost job is seen in a minute. Exports heartbeat the same way (``owner``, ``heartbeat_at``,
``attempts``). ``job_outbox`` holds the rq jobs a transaction wanted while Redis was unreachable (a top-up's
notifications, a payment callback); the scheduler drains it into rq when Redis is back.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from meterhub.rls import enable_tenant_rls

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade():
    op.add_column("commands", sa.Column("job_id", sa.String(64), nullable=True))
    op.add_column("commands", sa.Column("owner", sa.String(120), nullable=True))
    op.add_column("commands", sa.Column("heartbeat_at", TS, nullable=True))
    op.add_column("commands", sa.Column("verify_first", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_commands_meter_open", "commands", ["meter_id", "id"],
                    postgresql_where=sa.text("state IN ('queued','sent')"))
    op.add_column("report_exports", sa.Column("owner", sa.String(120), nullable=True))
    op.add_column("report_exports", sa.Column("heartbeat_at", TS, nullable=True))
    op.add_column("report_exports", sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "job_outbox",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("group_id", sa.BigInteger(), sa.ForeignKey("groups.id", ondelete="CASCADE"), nullable=False),
        sa.Column("queue", sa.String(32), nullable=False),
        sa.Column("path", sa.String(200), nullable=False),
        sa.Column("kwargs", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("description", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=False, server_default=""),
    )
    op.create_index("ix_job_outbox_group_id", "job_outbox", ["group_id"])
    enable_tenant_rls("job_outbox")


def downgrade():
    op.drop_table("job_outbox")
    op.drop_column("report_exports", "attempts")
    op.drop_column("report_exports", "heartbeat_at")
    op.drop_column("report_exports", "owner")
    op.drop_index("ix_commands_meter_open", table_name="commands")
    op.drop_column("commands", "verify_first")
    op.drop_column("commands", "heartbeat_at")
    op.drop_column("commands", "owner")
    op.drop_column("commands", "job_id")
