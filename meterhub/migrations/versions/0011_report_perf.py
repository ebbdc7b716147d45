"""report perf: the primary keys of usage_daily and usage_monthly cover the usage columns

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-22 22:40:00

Usage reports and :func:`meterhub.timeseries.query.usage` read rollup buckets by ``meter_id = ANY(...) AND
bucket`` range. With the plain ``(meter_id, bucket)`` key every bucket found in the index was then fetched
from the heap (bench: 30,000 buckets of 1,000 meters over 30 days, 33,000 buffer hits); with the value
columns INCLUDEd in the key's index the scan is index-only once the visibility map is set (autovacuum does
that on these insert-mostly tables): 3,300 buffer hits, 30 ms -> 21 ms of execution, and the rows come in
``(meter_id, bucket)`` order without a sort.

The key stays ``(meter_id, bucket)``: only its index carries the extra columns, so no second index is
maintained. ``usage_hourly`` keeps its plain key: it is 24 times larger, rewritten by every rollup run, and
read per meter or per night by background jobs, where a second copy of every row is not worth it.

Rebuilding the key takes an ACCESS EXCLUSIVE lock on the table for the time of the index build (seconds for
millions of rows); the rollup job waits meanwhile.
"""
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

TABLES = ('usage_daily', 'usage_monthly')
INCLUDE = ('energy_kwh, energy_sharp_kwh, energy_peak_kwh, energy_flat_kwh, energy_valley_kwh, '
           'energy_export_kwh, water_m3, readings, resets')


def upgrade():
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT pk_{table}, "
                   f"ADD CONSTRAINT pk_{table} PRIMARY KEY (meter_id, bucket) INCLUDE ({INCLUDE})")


def downgrade():
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT pk_{table}, "
                   f"ADD CONSTRAINT pk_{table} PRIMARY KEY (meter_id, bucket)")
