"""The migrations build exactly the schema the models declare, so autogenerate never proposes to undo one.

Table comments are left out: they mark append-only tables for the grant set-up (``rls.mark_append_only``)
and live only in the database.
"""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from meterhub import all_models  # noqa: F401
from meterhub.extensions import db


def _flatten(diffs):
    for diff in diffs:
        if isinstance(diff, list):
            yield from _flatten(diff)
        else:
            yield diff


def test_models_and_migrations_agree(database_url):
    engine = create_engine(database_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        # On TimescaleDB the hypertable keeps the composite foreign key that plain PostgreSQL replaces with a
        # per-statement trigger (migrations 0012 and 0020; hypertables have no transition tables).
        diffs = [d for d in _flatten(compare_metadata(context, db.metadata))
                 if d[0] not in ("add_table_comment", "remove_table_comment")
                 and not (d[0] == "remove_fk" and d[1].name == "fk_readings_meter_id_group_id_meters")]
    engine.dispose()
    assert not diffs, "models and migrations differ (write a migration or fix the model):\n" + "\n".join(map(str, diffs))
