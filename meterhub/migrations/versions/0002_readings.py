"""readings: raw readings, latest values, usage rollups, health events, MQTT sequences

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 21:00:00
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from meterhub.rls import enable_tenant_rls, mark_append_only
from meterhub.timeseries import timescale

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

ENERGY = sa.Numeric(18, 4)
WATER = sa.Numeric(16, 4)
MONEY = sa.Numeric(14, 3)
TENANT_TABLES = ("readings", "meter_latest", "usage_hourly", "usage_daily", "usage_monthly", "health_events",
                 "mqtt_sequences")


def _quantities():
    return [
        sa.Column('energy_kwh', ENERGY), sa.Column('energy_sharp_kwh', ENERGY),
        sa.Column('energy_peak_kwh', ENERGY), sa.Column('energy_flat_kwh', ENERGY),
        sa.Column('energy_valley_kwh', ENERGY), sa.Column('energy_export_kwh', ENERGY),
        sa.Column('water_m3', WATER), sa.Column('remaining_money', MONEY),
        sa.Column('purchase_count', sa.Integer()),
        *[sa.Column(c, sa.Float()) for c in ('power_kw', 'voltage_a_v', 'voltage_b_v', 'voltage_c_v',
                                             'current_a_a', 'current_b_a', 'current_c_a', 'power_factor',
                                             'frequency_hz')],
        sa.Column('relay_closed', sa.Boolean()), sa.Column('valve_open', sa.Boolean()),
        sa.Column('extra', postgresql.JSONB(astext_type=sa.Text())),
    ]


def _tenant(table):
    return [
        sa.Column('group_id', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f(f'fk_{table}_group_id_groups'),
                                ondelete='CASCADE'),
    ]


def _meter_fk(table):
    return sa.ForeignKeyConstraint(['meter_id'], ['meters.id'], name=op.f(f'fk_{table}_meter_id_meters'),
                                   ondelete='CASCADE')


def upgrade():
    op.create_table('readings',
        sa.Column('meter_id', sa.BigInteger(), nullable=False),
        sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
        *_quantities(),
        sa.Column('quality', sa.SmallInteger(), nullable=False, server_default='0'),
        sa.Column('source', sa.String(length=8), nullable=False, server_default='poll'),
        sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        *_tenant('readings'), _meter_fk('readings'),
        sa.PrimaryKeyConstraint('meter_id', 'ts', name=op.f('pk_readings')),
    )
    # Late readings are found by arrival time; BRIN is nearly free on an append-mostly table.
    op.execute("CREATE INDEX ix_readings_received_at ON readings USING brin (received_at)")
    op.create_table('meter_latest',
        sa.Column('meter_id', sa.BigInteger(), nullable=False),
        sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
        sa.Column('good_ts', sa.DateTime(timezone=True)),
        sa.Column('quality', sa.SmallInteger(), nullable=False, server_default='0'),
        *_quantities(), *_tenant('meter_latest'), _meter_fk('meter_latest'),
        sa.PrimaryKeyConstraint('meter_id', name=op.f('pk_meter_latest')),
    )
    op.create_index(op.f('ix_meter_latest_group_id'), 'meter_latest', ['group_id'], unique=False)
    for table in ('usage_hourly', 'usage_daily', 'usage_monthly'):
        op.create_table(table,
            sa.Column('meter_id', sa.BigInteger(), nullable=False),
            sa.Column('bucket', sa.DateTime(timezone=True), nullable=False),
            sa.Column('energy_kwh', ENERGY), sa.Column('energy_sharp_kwh', ENERGY),
            sa.Column('energy_peak_kwh', ENERGY), sa.Column('energy_flat_kwh', ENERGY),
            sa.Column('energy_valley_kwh', ENERGY), sa.Column('energy_export_kwh', ENERGY),
            sa.Column('water_m3', WATER),
            sa.Column('readings', sa.Integer(), nullable=False, server_default='0'),
            sa.Column('resets', sa.Integer(), nullable=False, server_default='0'),
            *_tenant(table), _meter_fk(table),
            sa.PrimaryKeyConstraint('meter_id', 'bucket', name=op.f(f'pk_{table}')),
        )
        op.create_index(op.f(f'ix_{table}_group_id'), table, ['group_id'], unique=False)
    op.create_table('health_events',
        sa.Column('id', sa.BigInteger(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('object_type', sa.String(length=16), nullable=False),
        sa.Column('object_id', sa.BigInteger(), nullable=False),
        sa.Column('event', sa.String(length=16), nullable=False),
        sa.Column('detail', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        *_tenant('health_events'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_health_events')),
    )
    op.create_index(op.f('ix_health_events_group_id'), 'health_events', ['group_id'], unique=False)
    op.create_table('mqtt_sequences',
        sa.Column('gateway_id', sa.BigInteger(), nullable=False),
        sa.Column('seq', sa.BigInteger(), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        *_tenant('mqtt_sequences'),
        sa.ForeignKeyConstraint(['gateway_id'], ['gateways.id'], name=op.f('fk_mqtt_sequences_gateway_id_gateways'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('gateway_id', 'seq', name=op.f('pk_mqtt_sequences')),
    )
    op.create_index(op.f('ix_mqtt_sequences_group_id'), 'mqtt_sequences', ['group_id'], unique=False)
    op.create_index(op.f('ix_mqtt_sequences_received_at'), 'mqtt_sequences', ['received_at'], unique=False)
    op.create_table('timeseries_state',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('key', name=op.f('pk_timeseries_state')),
    )
    for table in TENANT_TABLES:
        enable_tenant_rls(table)
    for table in ("readings", "health_events", "mqtt_sequences"):
        mark_append_only(table)
    # The TimescaleDB objects (hypertable, compression, aggregates) come with migration 0020, which also
    # converts a database made here on plain PostgreSQL: RLS on ``readings`` (above) goes there.


def downgrade():
    conn = op.get_bind()
    if timescale.timescale_installed(conn):
        for stmt in timescale.drop_cagg_statements():
            op.execute(stmt)
    for table in ('timeseries_state', 'mqtt_sequences', 'health_events', 'usage_monthly', 'usage_daily',
                  'usage_hourly', 'meter_latest', 'readings'):
        op.drop_table(table)
