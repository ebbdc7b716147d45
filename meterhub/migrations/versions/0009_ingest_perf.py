"""ingest perf: one composite foreign key (meter_id, group_id) -> meters on readings instead of two

Revision ID: 0009
Revises: 0006
Create Date: 2026-11-21 21:55:00

Every row COPYed or inserted into ``readings`` ran two referential-integrity checks (``meter_id`` ->
``meters``, ``group_id`` -> ``groups``), each a per-row index probe plus a ``FOR KEY SHARE`` row lock. On the
bench (100k rows, 20k per COPY) they were about two thirds of the COPY time: 0.95 s with both, 0.60 s with
the meter key only, 0.30 s with none.

The foreign keys are not simply dropped: the app role keeps INSERT on ``readings`` (``rls.ensure_grants``
grants INSERT on every table and re-runs on each ``db upgrade``, so a REVOKE here would not last), and the
meter key carries ``ON DELETE CASCADE``. Instead both are replaced by ONE composite key
``(meter_id, group_id) -> meters (id, group_id) ON DELETE CASCADE``, which is one check per row and is
strictly stronger than before:

* the meter exists (as before), and it belongs to the reading's group (not checked before: a reading could
  name a meter of another tenant);
* the group exists, because ``meters.group_id`` references ``groups`` (deleting a group cascades to its
  meters, and from them to their readings, as before);
* deleting a meter still deletes its readings.

A meter cannot be moved to another group while it has readings (``ON UPDATE NO ACTION``); nothing in
meterhub does that, and silently keeping readings under the old tenant would have been wrong anyway.

The referenced columns need a unique constraint: ``uq_meters_group_id_id (group_id, id)`` (``id`` alone is
already the primary key, so it never rejects a row). It replaces ``ix_meters_group_id``, whose lookups it
serves as well (``group_id`` leads). Keeping both is a trap: while ``meters`` has no statistics yet (a fresh
database, before autovacuum's first ANALYZE) the planner costs the two indexes equally and the key check
``WHERE id = $1 AND group_id = $2`` scanned every meter of the group through ``ix_meters_group_id``
(bench: 3.3 s instead of 0.65 s per 100k rows); with only the unique index it is one exact probe.

Bench, 100k rows COPYed in 20k batches into a copy of ``readings`` (analyzed ``meters``, same run):
both keys 0.85-0.87 s, the composite key 0.63-0.66 s, no key 0.30-0.32 s.

Adding the key validates existing readings once, under a SHARE ROW EXCLUSIVE lock on ``readings`` (writes
wait, reads go on).
"""
from alembic import op

revision = '0009'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    op.execute("ALTER TABLE meters ADD CONSTRAINT uq_meters_group_id_id UNIQUE (group_id, id)")
    op.execute("DROP INDEX ix_meters_group_id")
    op.execute("ALTER TABLE readings ADD CONSTRAINT fk_readings_meter_id_group_id_meters "
               "FOREIGN KEY (meter_id, group_id) REFERENCES meters (id, group_id) ON DELETE CASCADE")
    op.execute("ALTER TABLE readings DROP CONSTRAINT fk_readings_meter_id_meters")
    op.execute("ALTER TABLE readings DROP CONSTRAINT fk_readings_group_id_groups")


def downgrade():
    op.execute("ALTER TABLE readings ADD CONSTRAINT fk_readings_group_id_groups "
               "FOREIGN KEY (group_id) REFERENCES groups (id) ON DELETE CASCADE")
    op.execute("ALTER TABLE readings ADD CONSTRAINT fk_readings_meter_id_meters "
               "FOREIGN KEY (meter_id) REFERENCES meters (id) ON DELETE CASCADE")
    op.execute("ALTER TABLE readings DROP CONSTRAINT fk_readings_meter_id_group_id_meters")
    op.execute("CREATE INDEX ix_meters_group_id ON meters (group_id)")
    op.execute("ALTER TABLE meters DROP CONSTRAINT uq_meters_group_id_id")
