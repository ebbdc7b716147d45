"""Raw SQL as the web app's role on readings, rollups and aggregates: no privilege on the relations, and their
tenant views show the transaction's group only, on plain PostgreSQL and on TimescaleDB alike."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from meterhub.db import service_session
from meterhub.timeseries.ingest import Reading, ingest
from meterhub.timeseries.rollups import refresh_rollups
from meterhub.timeseries.tenant_views import PROTECTED, USAGE_VIEWS

from .factories import make_fleet

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)


@pytest.fixture()
def app_role(app):
    engine = create_engine(app.config["APP_DATABASE_URL"])
    yield engine
    engine.dispose()


@pytest.fixture()
def two_groups(app, group, other_group) -> dict[int, int]:
    """A meter per group with a day of readings, rolled up (and aggregated, on TimescaleDB): {group: meter}."""
    meters = {group.group_id: make_fleet(app, group).meter_ids[0],
              other_group.group_id: make_fleet(app, other_group).meter_ids[0]}
    with app.app_context():
        ingest([Reading(g, m, T0 + timedelta(hours=h), {"energy_kwh": Decimal(10 + h)})
                for g, m in meters.items() for h in range(25)])
        with service_session() as s:
            refresh_rollups(s, datetime(2000, 1, 1, tzinfo=timezone.utc))
    return meters


def _relations(app) -> dict[str, str]:
    """The protected relations of this database, with their views."""
    with app.app_context(), service_session() as s:
        return {r: v for r, v in PROTECTED.items()
                if s.execute(text("SELECT to_regclass(:r)"), {"r": r}).scalar() is not None}


def test_app_role_has_no_privilege_on_readings_rollups_or_aggregates(app, app_role, group):
    relations = _relations(app)
    assert {"readings", "usage_hourly", "usage_daily", "usage_monthly"} <= set(relations)
    for relation, view in relations.items():
        # (an aggregate refuses writes before privileges are checked: "not automatically updatable")
        for sql in (f"SELECT 1 FROM {relation} LIMIT 1", f"DELETE FROM {relation}",
                    f"INSERT INTO {relation} (group_id, meter_id) VALUES ({group.group_id}, 1)",
                    f"INSERT INTO {view} (group_id, meter_id) VALUES ({group.group_id}, 1)"):
            refused = "permission denied" if sql.startswith("SELECT") or relation in USAGE_VIEWS \
                or relation == "readings" else "permission denied|not automatically updatable"
            with pytest.raises(DBAPIError, match=refused):
                with app_role.begin() as conn:
                    conn.execute(text("SELECT set_config('meterhub.group_id', :g, true)"), {"g": str(group.group_id)})
                    conn.execute(text(sql))


def test_views_are_security_barriers_owned_by_another_role(app):
    app_user = app.config["APP_DB_USER"]
    with app.app_context(), service_session() as s:
        for view in _relations(app).values():
            owner, options = s.execute(text(
                "SELECT pg_get_userbyid(relowner), reloptions FROM pg_class WHERE oid = CAST(:v AS regclass)"),
                {"v": view}).one()
            assert owner != app_user and "security_barrier=true" in (options or []), view


def test_each_view_shows_the_transactions_group_only(app, app_role, two_groups, group, other_group):
    views = _relations(app).values()
    assert len(views) in (4, 7)  # readings and three rollups; plus three aggregates on TimescaleDB
    for mine, theirs in ((group.group_id, other_group.group_id), (other_group.group_id, group.group_id)):
        with app_role.begin() as conn:
            conn.execute(text("SELECT set_config('meterhub.group_id', :g, true)"), {"g": str(mine)})
            for view in views:
                seen = conn.execute(text(f"SELECT DISTINCT group_id, meter_id FROM {view}")).all()
                assert seen == [(mine, two_groups[mine])], view
                # asking for the other group's rows by name finds nothing either
                assert conn.execute(text(f"SELECT count(*) FROM {view} WHERE group_id = :o OR meter_id = :m"),
                                    {"o": theirs, "m": two_groups[theirs]}).scalar() == 0, view
    with app_role.begin() as conn:  # no group set: nothing
        for view in views:
            assert conn.execute(text(f"SELECT count(*) FROM {view}")).scalar() == 0, view


def test_the_service_role_reads_every_group_through_the_same_views(app, two_groups):
    with app.app_context(), service_session() as s:
        for view in _relations(app).values():
            seen = set(s.execute(text(f"SELECT DISTINCT meter_id FROM {view} WHERE meter_id = ANY(:m)"),
                                 {"m": list(two_groups.values())}).scalars())
            assert seen == set(two_groups.values()), view
