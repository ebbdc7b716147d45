"""A failing TimescaleDB policy reaches the group's people in the console, not only health events and the CLI:
a banner on the dashboard and the report pages while the job's latest event is ``policy_failed`` (issue 15)."""

from __future__ import annotations

import json

from sqlalchemy import text

from meterhub.db import service_session
from meterhub.timeseries.policies import FAILED, OBJECT_TYPE, RECOVERED

ERROR = "cannot drop portal \"\" while it is being set up"


def _event(app, group_id: int, event: str, job_id: int = 1007) -> None:
    detail = {"job_id": job_id, "policy": "policy_refresh_continuous_aggregate", "relation": "usage_daily_agg",
              "error": ERROR if event == FAILED else None, "last_success": None}
    with app.app_context(), service_session() as s:
        s.execute(text("INSERT INTO health_events (group_id, object_type, object_id, event, detail) "
                       "VALUES (:g, :t, :job, :e, CAST(:d AS jsonb))"),
                  {"g": group_id, "t": OBJECT_TYPE, "job": job_id, "e": event, "d": json.dumps(detail)})


def test_banner_while_a_policy_fails_for_its_group_only(app, client, group, other_group, operator, login):
    operator("group_admin")
    assert "policy-failing" not in client.get("/").get_data(as_text=True)
    _event(app, group.group_id, FAILED)
    for page in ("/", "/reports/usage"):
        body = client.get(page).get_data(as_text=True)
        assert "policy-failing" in body and "usage_daily_agg" in body, page
        assert "cannot drop portal" in body  # TimescaleDB's own error, for the platform operator
    # another group's admin sees nothing of it (health events are under row-level security)
    user, password, _ = other_group.operator("group_admin")
    other = app.test_client()
    from tests.conftest import csrf_token

    other.post("/login", data={"username": user, "password": password, "csrf_token": csrf_token(other)})
    assert "policy-failing" not in other.get("/").get_data(as_text=True)
    # TimescaleDB's job succeeds again: the banner goes
    _event(app, group.group_id, RECOVERED)
    assert "policy-failing" not in client.get("/").get_data(as_text=True)


def test_no_banner_for_operators_who_read_no_reports(app, client, group, operator):
    _event(app, group.group_id, FAILED, job_id=1008)
    operator("cashier")
    body = client.get("/").get_data(as_text=True)
    assert "policy-failing" not in body


def test_the_watch_records_what_the_banner_reads(app, group):
    """The events the banner reads are the ones :func:`watch_policies` records (same type and names)."""
    from meterhub.db import service_engine
    from meterhub.extensions import db
    from meterhub.db import use_group
    from meterhub.timeseries import policies

    state = policies.PolicyState(2001, "policy_compression", "readings", {}, "Failed", None, None, 3, ERROR)
    with app.app_context():
        with service_engine().begin() as conn:
            policies._record(conn, state, FAILED)
        try:
            with app.test_request_context():
                use_group(group.group_id)
                failing = {p["job_id"]: p for p in policies.failing_policies(db.session)}
                assert failing[2001]["policy"] == "policy_compression" and failing[2001]["relation"] == "readings"
                assert failing[2001]["error"] == ERROR
        finally:
            with service_engine().begin() as conn:  # every group had the event: leave them recovered
                policies._record(conn, state, RECOVERED)
