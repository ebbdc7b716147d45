"""events: the inserting transaction's id on prepaid and health events, for gap-free alarm watermarks

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-22 00:40:00

The alarm job read ``prepaid_events`` and ``health_events`` past an id watermark. Ids are taken at insert,
not at commit: with two transactions in flight (two charging shards, a top-up beside a charging run) the
one with the lower ids can commit after a poll has already moved the watermark past them, and its events
were never read (a missed alarm). Each event now carries ``txid`` (``txid_current()`` of the inserting
transaction, epoch-extended, never wraps) and the job reads the events of the transactions below the oldest
one still running (``txid_snapshot_xmin``), in (txid, id) order: every one of them has committed or
rolled back, so nothing can appear below the watermark later.

Existing rows: those the id watermark already covered get txid 0 (done); the others get this migration's
transaction id and are read once by the new watermark, which starts at (1, 0).
"""
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

TABLES = ("prepaid_events", "health_events")


def upgrade():
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ADD COLUMN txid bigint")
        op.execute(f"UPDATE {table} SET txid = CASE WHEN id <= coalesce((SELECT value FROM alarm_watermarks "
                   f"WHERE key = '{table}'), 0) THEN 0 ELSE txid_current() END")
        op.execute(f"ALTER TABLE {table} ALTER COLUMN txid SET DEFAULT txid_current()")
        op.execute(f"ALTER TABLE {table} ALTER COLUMN txid SET NOT NULL")
        op.execute(f"CREATE INDEX ix_{table}_txid_id ON {table} (txid, id)")
        op.execute(f"INSERT INTO alarm_watermarks (key, value) VALUES ('{table}:txid', 1), ('{table}:id', 0) "
                   "ON CONFLICT (key) DO NOTHING")


def downgrade():
    for table in TABLES:
        op.execute(f"DELETE FROM alarm_watermarks WHERE key IN ('{table}:txid', '{table}:id')")
        op.execute(f"DROP INDEX ix_{table}_txid_id")
        op.execute(f"ALTER TABLE {table} DROP COLUMN txid")
