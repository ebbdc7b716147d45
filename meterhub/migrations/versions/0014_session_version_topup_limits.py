"""sign-in and money limits: a session version per operator and portal user; top-up limits per group

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 17:40:00

``session_version`` is part of every signed-in session and checked on each request; signing out or changing
the password bumps it, so a copied session cookie stops working. ``topup_max`` is the largest single
top-up a group accepts (counter, API and online alike); above ``topup_confirm_above`` the console asks for a
confirmation and the API requires ``confirm: true``.
"""
import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade():
    for table in ("operators", "portal_users"):
        op.add_column(table, sa.Column("session_version", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("groups", sa.Column("topup_max", sa.Numeric(14, 2), nullable=False, server_default="50000.00"))
    op.add_column("groups", sa.Column("topup_confirm_above", sa.Numeric(14, 2), nullable=False,
                                      server_default="5000.00"))
    op.execute("ALTER TABLE groups ADD CONSTRAINT ck_groups_topup_limits "
               "CHECK (topup_max > 0 AND topup_confirm_above >= 0 AND topup_confirm_above <= topup_max)")


def downgrade():
    op.execute("ALTER TABLE groups DROP CONSTRAINT ck_groups_topup_limits")
    op.drop_column("groups", "topup_confirm_above")
    op.drop_column("groups", "topup_max")
    for table in ("operators", "portal_users"):
        op.drop_column(table, "session_version")
