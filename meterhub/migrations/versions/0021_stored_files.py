"""stored files: report exports (and any file a worker makes for a person) in the database, readable from every host

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 21:00:00

``stored_files`` holds a file's name, type, size and SHA-256; ``stored_file_chunks`` its bytes in chunks of 1 MiB
(a download streams them one by one). Both are tenant tables under row-level security.
``report_exports.file_id`` names the export's file (``path`` stays for exports written to a folder before this);
``report_exports.data_as_of`` is how fresh the data it was made from was (a read replica's replay time).
A partial index serves the console's banner of failing TimescaleDB policies (their health events).
"""
import sqlalchemy as sa
from alembic import op

from meterhub.rls import enable_tenant_rls

revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _group() -> sa.Column:
    return sa.Column("group_id", sa.BigInteger(), sa.ForeignKey("groups.id", ondelete="CASCADE"), nullable=False)


def upgrade():
    op.create_table(
        "stored_files", sa.Column("id", sa.BigInteger(), primary_key=True), _group(),
        sa.Column("kind", sa.String(32), nullable=False), sa.Column("name", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(120), nullable=False), sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False), sa.Column("created_at", TS, nullable=False))
    op.create_index("ix_stored_files_group_id", "stored_files", ["group_id"])
    op.create_table(
        "stored_file_chunks",
        sa.Column("file_id", sa.BigInteger(), sa.ForeignKey("stored_files.id", ondelete="CASCADE"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False), _group(), sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("file_id", "seq"))
    op.create_index("ix_stored_file_chunks_group_id", "stored_file_chunks", ["group_id"])
    for table in ("stored_files", "stored_file_chunks"):
        enable_tenant_rls(table)
    op.add_column("report_exports", sa.Column(
        "file_id", sa.BigInteger(), sa.ForeignKey("stored_files.id", ondelete="SET NULL"), nullable=True))
    op.add_column("report_exports", sa.Column("data_as_of", TS, nullable=True))
    # the console's banner of failing TimescaleDB policies reads each policy's latest health event of the group
    op.create_index("ix_health_events_ts_policy", "health_events", ["group_id", "object_id", "id"],
                    postgresql_where=sa.text("object_type = 'ts_policy'"))


def downgrade():
    op.drop_index("ix_health_events_ts_policy", table_name="health_events")
    op.drop_column("report_exports", "data_as_of")
    op.drop_column("report_exports", "file_id")
    op.drop_table("stored_file_chunks")
    op.drop_table("stored_files")
