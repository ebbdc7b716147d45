"""The one read path over readings and usage: ``security_barrier`` views that show the transaction's group.

TimescaleDB cannot compress or aggregate a table with row-level security, and its continuous aggregates
cannot carry any, so the web app's role holds no privilege on ``readings``, the rollup tables or the
aggregates, on either backend. It reads them through these views, owned by the service role (which may read
every group), that keep the rows of ``meterhub.group_id`` (``SET LOCAL`` per transaction, as RLS does). A
role that bypasses row-level security (the service role, a superuser) sees every group through them, so
background jobs use the same queries. ``rls.ensure_grants`` sets owners and grants on every ``db upgrade``.

The views list the columns of their table when created: a migration that adds a column to ``readings`` or a
rollup table re-creates the view (:func:`create_views`).
"""

from __future__ import annotations

import logging

from alembic import op
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from . import timescale

log = logging.getLogger(__name__)

READINGS_VIEW = "tenant_readings"
#: Rollup tables (plain PostgreSQL usage) and their views.
USAGE_VIEWS = {"usage_hourly": "tenant_usage_hourly", "usage_daily": "tenant_usage_daily",
               "usage_monthly": "tenant_usage_monthly"}
#: Continuous aggregates (TimescaleDB) and their views.
CAGG_VIEWS = {timescale.CAGGS["hour"]: "tenant_readings_hourly", timescale.CAGGS["day"]: "tenant_readings_daily",
              timescale.CAGGS["month"]: "tenant_readings_monthly"}
#: Every relation the app role must never touch directly, with the view it reads instead.
PROTECTED = {"readings": READINGS_VIEW, **USAGE_VIEWS, **CAGG_VIEWS}

#: True for a role that may read every group (superuser or BYPASSRLS), as row-level security decides.
SEES_ALL_FN = """
CREATE OR REPLACE FUNCTION meterhub_sees_all_groups() RETURNS boolean
LANGUAGE sql STABLE AS $$ SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user $$
"""
#: The newest non-NULL value of a window (a STRICT transition function skips NULLs).
LAST_KNOWN = [
    "CREATE OR REPLACE FUNCTION meterhub_pick_newer(numeric, numeric) RETURNS numeric "
    "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS 'SELECT $2'",
    "CREATE OR REPLACE AGGREGATE meterhub_last_known(numeric) (sfunc = meterhub_pick_newer, stype = numeric)",
]
# group_id joins the covering key of the day and month rollups so that the views stay index-only scans.
_USAGE_INCLUDE = ("energy_kwh, energy_sharp_kwh, energy_peak_kwh, energy_flat_kwh, energy_valley_kwh, "
                  "energy_export_kwh, water_m3, readings, resets")


def _view_sql(view: str, relation: str) -> str:
    # The group test runs once per query for the bypass check (an InitPlan), and before any condition of
    # the caller that is not leakproof (security_barrier).
    return (f"CREATE OR REPLACE VIEW {view} WITH (security_barrier) AS SELECT * FROM {relation} "
            f"WHERE group_id = meterhub_current_group() OR (SELECT meterhub_sees_all_groups())")


def create_views(conn: Connection) -> None:
    """(Re-)create the view of every protected relation that exists in this database."""
    for relation, view in PROTECTED.items():
        if conn.execute(text("SELECT to_regclass(:r)"), {"r": relation}).scalar() is not None:
            conn.execute(text(_view_sql(view, relation)))


def install_timescale(conn: Connection) -> None:
    """Turn ``readings`` (with its rows) into a compressed hypertable with retention and the aggregates.

    Needs an autocommit connection (continuous aggregates cannot be created inside a transaction block).
    Does nothing where the aggregates exist already.
    """
    if timescale.timescale_installed(conn):
        return
    if not timescale.readings_is_hypertable(conn):
        for stmt in timescale.hypertable_statements():
            conn.execute(text(stmt))
    for stmt in timescale.retention_statements(timescale.retention_days()):
        conn.execute(text(stmt))
    if conn.execute(text("SELECT to_regtype('meterhub_span')")).scalar() is None:
        for stmt in timescale.SPAN_FUNCTIONS:
            conn.execute(text(stmt))
    for stmt in timescale.cagg_statements(timescale.cagg_timezone()):
        conn.execute(text(stmt))
    create_views(conn)
    log.info("readings is a TimescaleDB hypertable with compression and continuous aggregates")


def upgrade() -> None:
    """Migration 0020: the views on both backends; the TimescaleDB objects where the extension exists."""
    conn = op.get_bind()
    conn.execute(text(SEES_ALL_FN))
    for stmt in LAST_KNOWN + timescale.SPAN_FUNCTIONS:  # the span functions: for the aggregates (and tests)
        conn.execute(text(stmt))
    for table in ("usage_daily", "usage_monthly"):
        conn.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT pk_{table}, ADD CONSTRAINT pk_{table} "
                          f"PRIMARY KEY (meter_id, bucket) INCLUDE ({_USAGE_INCLUDE}, group_id)"))
    create_views(conn)
    if timescale.timescale_available(conn):
        with op.get_context().autocommit_block():
            install_timescale(op.get_bind())


def downgrade() -> None:
    """Back to migration 0019's objects (a hypertable stays a hypertable, without the aggregates)."""
    conn = op.get_bind()
    for view in PROTECTED.values():
        conn.execute(text(f"DROP VIEW IF EXISTS {view}"))
    if timescale.timescale_installed(conn):
        for stmt in timescale.drop_cagg_statements():
            conn.execute(text(stmt))
    for stmt in timescale.DROP_SPAN_FUNCTIONS:
        conn.execute(text(stmt))
    conn.execute(text("DROP AGGREGATE IF EXISTS meterhub_last_known(numeric)"))
    conn.execute(text("DROP FUNCTION IF EXISTS meterhub_pick_newer(numeric, numeric)"))
    conn.execute(text("DROP FUNCTION IF EXISTS meterhub_sees_all_groups()"))
    for table in ("usage_daily", "usage_monthly"):
        conn.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT pk_{table}, ADD CONSTRAINT pk_{table} "
                          f"PRIMARY KEY (meter_id, bucket) INCLUDE ({_USAGE_INCLUDE})"))


def apply_grants(conn: Connection, app_user: str, service_user: str) -> None:
    """The app role loses every privilege on the protected relations and may SELECT their views, which the
    service role owns; on TimescaleDB the service role also owns ``readings`` and the aggregates, so that its
    jobs may refresh and compress them (TimescaleDB allows that to the owner only)."""
    installed = timescale.timescale_installed(conn)
    for relation, view in PROTECTED.items():
        if conn.execute(text("SELECT to_regclass(:r)"), {"r": relation}).scalar() is not None:
            conn.execute(text(f'REVOKE ALL ON {relation} FROM "{app_user}"'))
            if installed and relation in (*timescale.CAGGS.values(), "readings"):
                kind = "TABLE" if relation == "readings" else "MATERIALIZED VIEW"
                conn.execute(text(f'ALTER {kind} {relation} OWNER TO "{service_user}"'))
        if conn.execute(text("SELECT to_regclass(:r)"), {"r": view}).scalar() is not None:
            conn.execute(text(f'ALTER VIEW {view} OWNER TO "{service_user}"'))
            conn.execute(text(f'REVOKE ALL ON {view} FROM "{app_user}"'))
            conn.execute(text(f'GRANT SELECT ON {view} TO "{app_user}"'))


def sync_retention(conn: Connection) -> bool:
    """Make the retention policy of ``readings`` what ``METERHUB_READINGS_RETENTION_DAYS`` says (each
    ``db upgrade``); True when it changed."""
    days = timescale.retention_days()
    current = conn.execute(text(
        "SELECT config->>'drop_after' FROM timescaledb_information.jobs "
        "WHERE proc_name = 'policy_retention' AND hypertable_name = 'readings'")).scalar()
    if days == 0 and current is None:
        return False
    if days and current and conn.execute(text("SELECT CAST(:a AS interval) = make_interval(days => :d)"),
                                         {"a": current, "d": days}).scalar():
        return False
    for stmt in timescale.retention_statements(days):
        conn.execute(text(stmt))
    log.info("retention of raw readings: %s", f"{days} days" if days else "forever")
    return True


def ensure_timescale(engine: Engine) -> bool:
    """After the migrations: where the server gained TimescaleDB after migration 0020 ran, install it now
    (``readings`` and its rows become the hypertable); keep the retention as configured. True when
    something was installed."""
    with engine.connect() as conn:
        if timescale.timescale_installed(conn):
            sync_retention(conn)
            conn.commit()
            return False
        if not timescale.timescale_available(conn):
            return False
        if conn.execute(text("SELECT to_regclass('tenant_readings')")).scalar() is None:
            return False  # not migrated to 0020 yet: the migration does it
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        install_timescale(conn)
    return True
