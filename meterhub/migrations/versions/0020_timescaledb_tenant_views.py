"""readings on TimescaleDB for real: tenant views over readings and usage on both backends; the hypertable,
compression, retention and continuous aggregates where the extension exists (also for an existing database)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 17:40:00
"""
from meterhub.timeseries import tenant_views

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade():
    tenant_views.upgrade()


def downgrade():
    tenant_views.downgrade()
