"""TimescaleDB path: hypertable, compression, retention and continuous aggregates (only where available).

On plain PostgreSQL none of this runs; the rollup tables filled by :func:`rollups.refresh_rollups` serve the
same queries. The continuous aggregates keep, per meter and bucket, the *last* value of each cumulative
counter; :mod:`query` derives usage as the difference between consecutive bucket-end counters, clipped at
zero (a drop is a reset or swap, see :mod:`rollups`; a reset inside one bucket loses that bucket).
"""

from __future__ import annotations

import os

from sqlalchemy import text
from sqlalchemy.engine import Connection

from .columns import COUNTERS

#: Retention of raw readings on TimescaleDB (days); rollups are kept forever. ``0`` keeps everything.
RETENTION_ENV = "METERHUB_READINGS_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 0
COMPRESS_AFTER = "30 days"
#: Day and month buckets of the continuous aggregates use one time zone (caggs cannot vary it per row).
CAGG_TIMEZONE_ENV = "METERHUB_CAGG_TIMEZONE"
CAGGS = {"hour": "readings_hourly_cagg", "day": "readings_daily_cagg", "month": "readings_monthly_cagg"}


def timescale_available(conn: Connection) -> bool:
    """True when the server can install the TimescaleDB extension."""
    return bool(conn.execute(text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")).scalar())


def timescale_installed(conn: Connection) -> bool:
    """True when this database uses TimescaleDB (the extension and our hourly aggregate exist)."""
    return bool(conn.execute(text(
        "SELECT 1 FROM pg_extension e, pg_class c WHERE e.extname = 'timescaledb' AND c.relname = :cagg"
    ), {"cagg": CAGGS["hour"]}).scalar())


def _last_counters(source_ts: str) -> str:
    return ", ".join(
        f"last({c}, {source_ts}) FILTER (WHERE {c} IS NOT NULL) AS {c}" for c in COUNTERS
    )


def upgrade_statements(retention_days: int | None = None, tz: str | None = None) -> list[str]:
    """DDL turning ``readings`` into a compressed hypertable with retention and continuous aggregates."""
    if retention_days is None:
        retention_days = int(os.environ.get(RETENTION_ENV, DEFAULT_RETENTION_DAYS))
    tz = tz or os.environ.get(CAGG_TIMEZONE_ENV, "Asia/Shanghai")
    stmts = [
        "CREATE EXTENSION IF NOT EXISTS timescaledb",
        "SELECT create_hypertable('readings', 'ts', chunk_time_interval => interval '7 days', migrate_data => true)",
        "ALTER TABLE readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'meter_id', "
        "timescaledb.compress_orderby = 'ts DESC')",
        f"SELECT add_compression_policy('readings', interval '{COMPRESS_AFTER}')",
    ]
    if retention_days > 0:
        stmts.append(f"SELECT add_retention_policy('readings', interval '{int(retention_days)} days')")
    stmts.append(
        f"CREATE MATERIALIZED VIEW {CAGGS['hour']} WITH (timescaledb.continuous) AS "
        f"SELECT meter_id, group_id, time_bucket(interval '1 hour', ts) AS bucket, {_last_counters('ts')}, "
        f"count(*) AS readings FROM readings GROUP BY meter_id, group_id, bucket WITH NO DATA"
    )
    for name, size, parent in (("day", "1 day", "hour"), ("month", "1 month", "day")):
        stmts.append(
            f"CREATE MATERIALIZED VIEW {CAGGS[name]} WITH (timescaledb.continuous) AS "
            f"SELECT meter_id, group_id, time_bucket(interval '{size}', bucket, '{tz}') AS bucket, "
            f"{_last_counters('bucket')}, sum(readings)::bigint AS readings FROM {CAGGS[parent]} "
            f"GROUP BY meter_id, group_id, time_bucket(interval '{size}', bucket, '{tz}') WITH NO DATA"
        )
    for name, offset, every in (("hour", "3 days", "5 minutes"), ("day", "35 days", "1 hour"),
                                ("month", "400 days", "1 day")):
        stmts.append(
            f"SELECT add_continuous_aggregate_policy('{CAGGS[name]}', start_offset => interval '{offset}', "
            f"end_offset => NULL, schedule_interval => interval '{every}')"
        )
    return stmts


def downgrade_statements() -> list[str]:
    """Drop the continuous aggregates (the hypertable goes with ``readings``)."""
    return [f"DROP MATERIALIZED VIEW IF EXISTS {CAGGS[n]} CASCADE" for n in ("month", "day", "hour")]
