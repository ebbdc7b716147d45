"""Alembic environment: runs as the admin/migration role, then sets up the app and service roles."""

from __future__ import annotations

import logging

from alembic import context
from flask import current_app
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from meterhub import all_models  # noqa: F401  (complete metadata for autogenerate)
from meterhub.extensions import db
from meterhub.rls import ensure_grants, ensure_roles
from meterhub.timeseries.tenant_views import ensure_timescale

log = logging.getLogger("alembic.env")


def create_database_if_missing(url: str) -> None:
    """Create the target database when it does not exist (needs CREATEDB)."""
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": target.database}).scalar():
            conn.execute(text(f'CREATE DATABASE "{target.database}"'))
            log.info("created database %s", target.database)
    admin.dispose()


def run_migrations_online() -> None:
    cfg = current_app.config
    create_database_if_missing(cfg["DATABASE_URL"])
    engine = create_engine(cfg["DATABASE_URL"])
    with engine.connect() as connection:
        ensure_roles(connection, cfg["APP_DB_USER"], cfg["APP_DB_PASSWORD"],
                     cfg["SERVICE_DB_USER"], cfg["SERVICE_DB_PASSWORD"])
        connection.commit()
        context.configure(connection=connection, target_metadata=db.metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
        ensure_timescale(engine)  # a server that gained TimescaleDB after this database was migrated
        ensure_grants(connection, cfg["APP_DB_USER"], cfg["SERVICE_DB_USER"])
        connection.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("Offline migrations are not supported: run `meterhub db upgrade` against a database.")
run_migrations_online()
