"""Database-level isolation: RLS on every tenant table, a powerless app role, append-only audit."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from meterhub.db import service_session
from meterhub.tenants import audit
from meterhub.timeseries.tenant_views import PROTECTED


@pytest.fixture()
def admin(database_url):
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture()
def app_role(app):
    engine = create_engine(app.config["APP_DATABASE_URL"])
    yield engine
    engine.dispose()


def tenant_tables(admin) -> list[str]:
    with admin.connect() as conn:
        return list(conn.execute(text(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND column_name = 'group_id' AND table_name IN "
            "(SELECT table_name FROM information_schema.tables WHERE table_schema='public' AND table_type='BASE TABLE')"
        )).scalars())


def test_every_tenant_table_has_forced_rls_and_a_policy(admin):
    # readings and the usage rollups: the app role holds no privilege on them at all and reads the tenant
    # views (TimescaleDB forbids RLS on a compressed hypertable), checked in tests/timeseries/test_tenant_views.py
    tables = [t for t in tenant_tables(admin) if t not in PROTECTED] + ["groups"]
    assert {"rooms", "operators", "audit_log", "meters"} <= set(tables)
    with admin.connect() as conn:
        for table in tables:
            row = conn.execute(text(
                "SELECT c.relrowsecurity, c.relforcerowsecurity, "
                "(SELECT count(*) FROM pg_policies p WHERE p.tablename = c.relname) AS policies, "
                "(SELECT attnotnull FROM pg_attribute WHERE attrelid = c.oid AND attname = 'group_id') AS notnull "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relname = :t"), {"t": table}).one()
            assert row.relrowsecurity and row.relforcerowsecurity, f"{table}: RLS not enabled and forced"
            assert row.policies >= 1, f"{table}: no policy"
            if table != "groups":
                assert row.notnull, f"{table}.group_id must be NOT NULL"


def test_app_role_owns_nothing_and_cannot_bypass(admin, app):
    user = app.config["APP_DB_USER"]
    with admin.connect() as conn:
        role = conn.execute(text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = :r"), {"r": user}).one()
        assert not role.rolsuper and not role.rolbypassrls
        owned = conn.execute(text(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = :r"),
            {"r": user}).scalar()
        assert owned == 0


def test_raw_sql_cannot_read_or_write_another_group(app_role, group, other_group):
    with app_role.connect() as conn:
        # No group set: nothing at all is visible.
        assert conn.execute(text("SELECT count(*) FROM rooms")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM operators")).scalar() == 0
        conn.rollback()
        with conn.begin():
            conn.execute(text("SELECT set_config('meterhub.group_id', :g, true)"), {"g": str(group.group_id)})
            # Even asking for the other group's rows explicitly returns nothing.
            assert conn.execute(text("SELECT count(*) FROM rooms WHERE group_id = :o"),
                                {"o": other_group.group_id}).scalar() == 0
            assert conn.execute(text("SELECT count(*) FROM rooms")).scalar() == 2
            assert conn.execute(text("SELECT count(*) FROM groups")).scalar() == 1
        with pytest.raises(DBAPIError, match="row-level security"):
            with conn.begin():
                conn.execute(text("SELECT set_config('meterhub.group_id', :g, true)"), {"g": str(group.group_id)})
                conn.execute(text("INSERT INTO properties (group_id, name, code, address, timezone, "
                                  "reading_interval_min, created_at) VALUES (:o, 'x', 'X', '', 'UTC', 30, now())"),
                             {"o": other_group.group_id})
        with conn.begin():
            conn.execute(text("SELECT set_config('meterhub.group_id', :g, true)"), {"g": str(group.group_id)})
            changed = conn.execute(text("UPDATE rooms SET name = 'hijacked' WHERE group_id = :o"),
                                   {"o": other_group.group_id}).rowcount
            assert changed == 0


def test_audit_log_is_append_only_for_the_app_role(app, app_role, group):
    with app.app_context(), service_session() as s:
        audit.record(s, group.group_id, "test.event", actor="pytest")
    with pytest.raises(DBAPIError, match="permission denied"):
        with app_role.begin() as conn:
            conn.execute(text("SELECT set_config('meterhub.group_id', :g, true)"), {"g": str(group.group_id)})
            conn.execute(text("UPDATE audit_log SET actor = 'someone else'"))
    with pytest.raises(DBAPIError, match="permission denied"):
        with app_role.begin() as conn:
            conn.execute(text("SELECT set_config('meterhub.group_id', :g, true)"), {"g": str(group.group_id)})
            conn.execute(text("DELETE FROM audit_log"))
