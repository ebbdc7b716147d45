"""TimescaleDB path: hypertable, compression, retention and continuous aggregates (only where available).

On plain PostgreSQL none of this runs; the rollup tables filled by :func:`rollups.refresh_rollups` serve the
same queries. The continuous aggregates keep, per meter, bucket and cumulative counter, the counter's *span*
in the bucket (``meterhub_span``: first and last value, the sum of its rises between consecutive readings,
how many times it dropped, how many values it had), built by the ordered aggregates
``meterhub_span(value ORDER BY ts)`` over readings and ``meterhub_span_merge(span ORDER BY bucket)`` over
finer buckets. :mod:`cagg_usage` adds the step from the previous bucket's last value, so the usage equals the
rollups' to the last digit: deltas between consecutive good readings, clipped at zero, a drop counted as a
reset, attributed to the later reading's bucket.

TimescaleDB refuses columnstore compression and continuous aggregates on a table with row-level security, so
``readings`` carries none here: the web app's role holds no privilege on it nor on the aggregates and reads
them through the ``tenant_*`` views (:mod:`tenant_views`), as on plain PostgreSQL.
"""

from __future__ import annotations

import os

from sqlalchemy import text
from sqlalchemy.engine import Connection

from .columns import COUNTERS, QUALITY_BAD

#: Retention of raw readings on TimescaleDB (days); the aggregates are kept forever. ``0`` keeps everything.
RETENTION_ENV = "METERHUB_READINGS_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 0
COMPRESS_AFTER = "30 days"
#: Day and month buckets of the continuous aggregates use one time zone (caggs cannot vary it per row);
#: meters of a property in another zone get their days and months from the hourly aggregate (:mod:`query`).
CAGG_TIMEZONE_ENV = "METERHUB_CAGG_TIMEZONE"
DEFAULT_CAGG_TIMEZONE = "Asia/Shanghai"
CAGGS = {"hour": "readings_hourly_cagg", "day": "readings_daily_cagg", "month": "readings_monthly_cagg"}
#: How far back each refresh policy looks (the hourly one must stay inside the raw readings' retention).
REFRESH_WINDOWS = {"hour": ("3 days", "5 minutes"), "day": ("35 days", "1 hour"), "month": ("400 days", "1 day")}
_PARENT = {"day": "hour", "month": "day"}
_SIZE = {"hour": "1 hour", "day": "1 day", "month": "1 month"}

SPAN_FUNCTIONS = [
    "CREATE TYPE meterhub_span AS (first numeric, last numeric, rise numeric, resets integer, n integer)",
    # One reading more, in time order: a drop is a reset (no usage), a rise is usage.
    """
CREATE FUNCTION meterhub_span_step(s meterhub_span, v numeric) RETURNS meterhub_span
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
  IF v IS NULL THEN RETURN s; END IF;
  IF s.first IS NULL THEN s.first := v; s.last := v; s.rise := 0; s.resets := 0; s.n := 1; RETURN s; END IF;
  s.n := s.n + 1;
  IF v < s.last THEN s.resets := s.resets + 1; ELSE s.rise := s.rise + (v - s.last); END IF;
  s.last := v;
  RETURN s;
END $$""",
    # One finer bucket more, in time order: the step between the buckets counts like one between readings.
    """
CREATE FUNCTION meterhub_span_merge_step(s meterhub_span, x meterhub_span) RETURNS meterhub_span
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
  IF x.first IS NULL THEN RETURN s; END IF;
  IF s.first IS NULL THEN RETURN x; END IF;
  IF x.first < s.last THEN s.resets := s.resets + 1; ELSE s.rise := s.rise + (x.first - s.last); END IF;
  s.rise := s.rise + x.rise;
  s.resets := s.resets + x.resets;
  s.n := s.n + x.n;
  s.last := x.last;
  RETURN s;
END $$""",
    "CREATE AGGREGATE meterhub_span(numeric) (sfunc = meterhub_span_step, stype = meterhub_span)",
    "CREATE AGGREGATE meterhub_span_merge(meterhub_span) (sfunc = meterhub_span_merge_step, stype = meterhub_span)",
]
DROP_SPAN_FUNCTIONS = [
    "DROP AGGREGATE IF EXISTS meterhub_span_merge(meterhub_span)",
    "DROP AGGREGATE IF EXISTS meterhub_span(numeric)",
    "DROP FUNCTION IF EXISTS meterhub_span_merge_step(meterhub_span, meterhub_span)",
    "DROP FUNCTION IF EXISTS meterhub_span_step(meterhub_span, numeric)",
    "DROP TYPE IF EXISTS meterhub_span",
]


#: ``off`` keeps a database on plain PostgreSQL even where the server has TimescaleDB.
SWITCH_ENV = "METERHUB_TIMESCALEDB"


def timescale_available(conn: Connection) -> bool:
    """True when the server can install the TimescaleDB extension (and ``METERHUB_TIMESCALEDB`` is not off)."""
    if os.environ.get(SWITCH_ENV, "").strip().lower() in ("off", "0", "false", "no"):
        return False
    return bool(conn.execute(text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")).scalar())


def timescale_installed(conn: Connection) -> bool:
    """True when this database uses TimescaleDB (the extension and our hourly aggregate exist)."""
    return bool(conn.execute(text(
        "SELECT 1 FROM pg_extension e, pg_class c WHERE e.extname = 'timescaledb' AND c.relname = :cagg"
    ), {"cagg": CAGGS["hour"]}).scalar())


def readings_is_hypertable(conn: Connection) -> bool:
    """True when ``readings`` is already a hypertable."""
    if not conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")).first():
        return False
    return bool(conn.execute(text(
        "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = 'readings'")).first())


def cagg_timezone() -> str:
    """The time zone of the day and month aggregates (``METERHUB_CAGG_TIMEZONE``, default Asia/Shanghai)."""
    return os.environ.get(CAGG_TIMEZONE_ENV) or DEFAULT_CAGG_TIMEZONE


def retention_days() -> int:
    """Days of raw readings kept on TimescaleDB (``METERHUB_READINGS_RETENTION_DAYS``; 0 keeps all)."""
    return int(os.environ.get(RETENTION_ENV) or DEFAULT_RETENTION_DAYS)


def hypertable_statements() -> list[str]:
    """``readings`` (plain, with its rows) becomes a hypertable that TimescaleDB may compress.

    Row-level security goes (the app role reads through ``tenant_readings``), and the per-statement meter
    check of migration 0012 gives way to the composite foreign key (hypertables have no transition tables).
    """
    return [
        "CREATE EXTENSION IF NOT EXISTS timescaledb",
        "DROP POLICY IF EXISTS tenant_isolation ON readings",
        "ALTER TABLE readings NO FORCE ROW LEVEL SECURITY",
        "ALTER TABLE readings DISABLE ROW LEVEL SECURITY",
        "DROP TRIGGER IF EXISTS readings_meter_check_insert ON readings",
        "DROP TRIGGER IF EXISTS readings_meter_check_update ON readings",
        "DROP TRIGGER IF EXISTS meters_cascade_readings ON meters",
        "ALTER TABLE readings DROP CONSTRAINT IF EXISTS fk_readings_meter_id_group_id_meters",
        "ALTER TABLE readings ADD CONSTRAINT fk_readings_meter_id_group_id_meters "
        "FOREIGN KEY (meter_id, group_id) REFERENCES meters (id, group_id) ON DELETE CASCADE",
        # no extra (ts) index: readings are read by meter and time (the primary key), chunks are found by time
        "SELECT create_hypertable('readings', 'ts', chunk_time_interval => interval '7 days', migrate_data => true, "
        "create_default_indexes => false)",
        "ALTER TABLE readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'meter_id', "
        "timescaledb.compress_orderby = 'ts DESC')",
        f"SELECT add_compression_policy('readings', interval '{COMPRESS_AFTER}')",
    ]


def retention_statements(days: int) -> list[str]:
    """Replace the retention policy of raw readings (``days`` = 0: keep everything)."""
    stmts = ["SELECT remove_retention_policy('readings', if_exists => true)"]
    if days > 0:
        hour_window_days = int(REFRESH_WINDOWS["hour"][0].split()[0])
        if days <= hour_window_days:
            raise ValueError(f"Retention of {days} days is shorter than the hourly aggregate's refresh window "
                             f"({REFRESH_WINDOWS['hour'][0]}): keep raw readings at least {hour_window_days + 1} days.")
        stmts.append(f"SELECT add_retention_policy('readings', interval '{int(days)} days')")
    return stmts


def _spans(source_ts: str, merge: bool) -> str:
    if merge:
        return ", ".join(f"meterhub_span_merge({c} ORDER BY {source_ts}) AS {c}" for c in COUNTERS)
    return ", ".join(f"meterhub_span({c} ORDER BY {source_ts}) AS {c}" for c in COUNTERS)


def cagg_statements(tz: str) -> list[str]:
    """The hourly, daily and monthly aggregates (real-time: the newest readings count before a refresh)."""
    with_counter = " OR ".join(f"{c} IS NOT NULL" for c in COUNTERS)
    stmts = [
        f"CREATE MATERIALIZED VIEW {CAGGS['hour']} WITH (timescaledb.continuous, "
        f"timescaledb.materialized_only = false) AS "
        f"SELECT meter_id, group_id, time_bucket(interval '1 hour', ts) AS bucket, {_spans('ts', False)}, "
        f"count(*) FILTER (WHERE {with_counter}) AS readings FROM readings WHERE quality <> {QUALITY_BAD} "
        f"GROUP BY meter_id, group_id, bucket WITH NO DATA"
    ]
    quoted_tz = tz.replace("'", "''")
    for name in ("day", "month"):
        bucket = f"time_bucket(interval '{_SIZE[name]}', bucket, '{quoted_tz}')"
        stmts.append(
            f"CREATE MATERIALIZED VIEW {CAGGS[name]} WITH (timescaledb.continuous, "
            f"timescaledb.materialized_only = false) AS "
            f"SELECT meter_id, group_id, {bucket} AS bucket, {_spans('bucket', True)}, "
            f"sum(readings)::bigint AS readings FROM {CAGGS[_PARENT[name]]} "
            f"GROUP BY meter_id, group_id, {bucket} WITH NO DATA"
        )
    for name, (offset, every) in REFRESH_WINDOWS.items():
        stmts.append(
            f"SELECT add_continuous_aggregate_policy('{CAGGS[name]}', start_offset => interval '{offset}', "
            f"end_offset => NULL, schedule_interval => interval '{every}')"
        )
    return stmts


def drop_cagg_statements() -> list[str]:
    """Drop the continuous aggregates (the hypertable goes with ``readings``)."""
    return [f"DROP MATERIALIZED VIEW IF EXISTS {CAGGS[n]} CASCADE" for n in ("month", "day", "hour")]
