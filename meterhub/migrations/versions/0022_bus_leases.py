"""bus leases with fencing epochs, collector membership

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 21:00:00

``bus_leases``: who may talk to a gateway's bus now (a collector or a command worker), until ``expires_at``
(database clock). ``epoch`` grows by one on every grant to a new holder and never goes down (a release keeps
the row and its epoch), so a result carrying an older epoch is recognised as written by a stale owner. Kept in
PostgreSQL next to the commands they guard: confirming a command checks the lease in the same transaction.
``collector_members``: live collector processes (heartbeat ``last_seen``), over which gateways are spread by
rendezvous hashing. Platform tables (no group): only the service role's processes use them.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "bus_leases",
        sa.Column("gateway_id", sa.BigInteger(), sa.ForeignKey("gateways.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("epoch >= 0", name="ck_bus_leases_epoch"),
    )
    op.create_table(
        "collector_members",
        sa.Column("member_id", sa.String(200), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("shard", sa.String(32), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("info", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
    )
    op.create_index("ix_collector_members_last_seen", "collector_members", ["last_seen"])


def downgrade():
    op.drop_index("ix_collector_members_last_seen", table_name="collector_members")
    op.drop_table("collector_members")
    op.drop_table("bus_leases")
