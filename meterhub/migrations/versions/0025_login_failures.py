"""failed sign-ins counted in PostgreSQL while Redis is unreachable (issue 22)

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07 21:00:00

The sign-in throttle counts failures in Redis; when Redis cannot be reached it counts them here instead, so a
Redis outage never leaves sign-in unlimited (``meterhub.tenants.auth.LoginThrottle``). Keys are SHA-256 hashes of
the throttle's keys (user name / phone, client address), never the names themselves. No group: sign-in happens
before the group is known, like ``meterhub_login_lookup``.
"""
import sqlalchemy as sa
from alembic import op

revision = '0025'
down_revision = '0024'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "login_failures",
        sa.Column("key_hash", sa.String(64), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_ends", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_login_failures_window_ends", "login_failures", ["window_ends"])


def downgrade():
    op.drop_table("login_failures")
