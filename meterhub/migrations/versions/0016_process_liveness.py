"""process liveness: collector state per gateway, process supervision events

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 17:55:00

``gateways.collector_state`` is what the collector liveness check last decided for a polled gateway:
``polling`` (a collector heartbeats its bus) or ``down`` (no heartbeat: the collector process is dead or stuck);
NULL while no collector ever polled it. It is apart from ``status`` (the gateway's own answers), so the console
can tell "collector down" from "gateway offline". ``process_events`` is the platform's record of supervised
processes that exited and were restarted (no group: one platform serves every group; append-only).
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from meterhub.rls import mark_append_only

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("gateways", sa.Column("collector_state", sa.String(16), nullable=True))
    op.add_column("gateways", sa.Column("collector_seen_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "process_events",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("process", sa.String(64), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("detail", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
    )
    op.create_index("ix_process_events_at", "process_events", ["at"])
    mark_append_only("process_events")


def downgrade():
    op.drop_index("ix_process_events_at", table_name="process_events")
    op.drop_table("process_events")
    op.drop_column("gateways", "collector_seen_at")
    op.drop_column("gateways", "collector_state")
