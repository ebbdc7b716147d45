"""audit_log: a per-group sequence number and HMAC-SHA256 chain keyed outside the database

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 17:40:00

The chain was unkeyed SHA-256 over public fields, so whoever could write rows could recompute it. Each
entry now carries ``seq`` (1, 2, 3... per group, unique) and its ``hash`` is an HMAC-SHA256 keyed with the
audit key (``AUDIT_KEY`` or ``instance/audit_key``), which no database role holds. Existing entries are
re-keyed here, once, with the key of the instance running the upgrade: the old SHA-256 chain is verified
first and its verdict is written into a closing ``audit.rekey`` entry of each group, so tampering done before
the upgrade is not laundered silently.
"""
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade():
    from flask import current_app

    from meterhub.tenants.audit_rekey import rekey_all

    op.execute("ALTER TABLE audit_log ADD COLUMN seq bigint")
    op.execute("UPDATE audit_log a SET seq = n.seq FROM (SELECT id, row_number() OVER "
               "(PARTITION BY group_id ORDER BY id) AS seq FROM audit_log) n WHERE a.id = n.id")
    op.execute("ALTER TABLE audit_log ALTER COLUMN seq SET NOT NULL")
    op.execute("ALTER TABLE audit_log ADD CONSTRAINT uq_audit_log_group_id_seq UNIQUE (group_id, seq)")
    rekey_all(op.get_bind(), current_app)


def downgrade():
    op.execute("ALTER TABLE audit_log DROP CONSTRAINT uq_audit_log_group_id_seq")
    op.execute("ALTER TABLE audit_log DROP COLUMN seq")
