"""Row-level security and grants: helpers for migrations and the role set-up run by ``db upgrade``."""

from __future__ import annotations

from alembic import op
from sqlalchemy import text
from sqlalchemy.engine import Connection

APPEND_ONLY = "meterhub:append-only"

CURRENT_GROUP_FN = """
CREATE OR REPLACE FUNCTION meterhub_current_group() RETURNS bigint
LANGUAGE sql STABLE AS $$ SELECT NULLIF(current_setting('meterhub.group_id', true), '')::bigint $$
"""


def enable_tenant_rls(table: str, column: str = "group_id") -> None:
    """Enable and force RLS on ``table`` with one policy: rows of the transaction's group only."""
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY tenant_isolation ON {table} "
        f"USING ({column} = meterhub_current_group()) WITH CHECK ({column} = meterhub_current_group())"
    )


def mark_append_only(table: str) -> None:
    """The app role gets INSERT and SELECT on ``table`` but never UPDATE or DELETE."""
    op.execute(f"COMMENT ON TABLE {table} IS '{APPEND_ONLY}'")


def scram_verifier(conn: Connection, password: str, user: str) -> str:
    """The SCRAM-SHA-256 verifier of ``password`` (what PostgreSQL stores), computed by libpq on our side."""
    from psycopg2.extensions import encrypt_password

    return encrypt_password(password, user, conn.connection.dbapi_connection, "scram-sha-256")


def ensure_roles(conn: Connection, app_user: str, app_password: str | None, service_user: str,
                 service_password: str | None) -> None:
    """Create (or fix) the app role (no BYPASSRLS, owns nothing) and the service role (BYPASSRLS).

    A password of ``None`` leaves the role's password as it is (managed outside meterhub)."""
    for user, password, bypass in ((app_user, app_password, False), (service_user, service_password, True)):
        exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": user}).scalar()
        verb = "ALTER" if exists else "CREATE"
        flags = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE " + ("BYPASSRLS" if bypass else "NOBYPASSRLS")
        if password:
            # Hashed here (SCRAM-SHA-256), so the clear password never reaches the server's logs.
            flags += " PASSWORD " + conn.execute(text("SELECT quote_literal(:p)"),
                                                 {"p": scram_verifier(conn, password, user)}).scalar()
        conn.exec_driver_sql(f'{verb} ROLE "{user}" {flags}')  # no bind parsing: a verifier holds ':'s


def ensure_grants(conn: Connection, app_user: str, service_user: str) -> None:
    """Grant table privileges after migrations: append-only tables lose UPDATE/DELETE for the app."""
    db_name = conn.execute(text("SELECT current_database()")).scalar()
    for user in (app_user, service_user):
        conn.execute(text(f'GRANT CONNECT ON DATABASE "{db_name}" TO "{user}"'))
        conn.execute(text(f'GRANT USAGE ON SCHEMA public TO "{user}"'))
        conn.execute(text(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{user}"'))
    conn.execute(text(f'GRANT CREATE ON SCHEMA public TO "{service_user}"'))  # to own the look-up functions
    conn.execute(text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{service_user}"'))
    conn.execute(text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{app_user}"'))
    conn.execute(text(f'REVOKE ALL ON alembic_version FROM "{app_user}"'))
    # readings, rollups, aggregates: no privilege for the app, which reads them through the tenant views
    from meterhub.timeseries.tenant_views import apply_grants

    apply_grants(conn, app_user, service_user)
    append_only = conn.execute(
        text(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND obj_description(c.oid, 'pg_class') = :tag"
        ),
        {"tag": APPEND_ONLY},
    ).scalars()
    for table in append_only:
        conn.execute(text(f'REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM "{app_user}"'))
    # The audit log is append-only for the service role too: only its owner (migrations) may change rows.
    conn.execute(text(f'REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM "{service_user}"'))
    # SECURITY DEFINER look-ups run as the service role, which may read across groups.
    functions = conn.execute(
        text(
            "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public' AND p.prosecdef AND p.proname LIKE 'meterhub\\_%'"
        )
    ).scalars()
    for fn in functions:
        conn.execute(text(f'ALTER FUNCTION {fn} OWNER TO "{service_user}"'))
        conn.execute(text(f'GRANT EXECUTE ON FUNCTION {fn} TO "{app_user}"'))
