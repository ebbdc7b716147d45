"""The audit chain detects edits and deletions, and names the first broken entry."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from meterhub.db import service_session
from meterhub.tenants import audit


def _entries(app, group_id: int, n: int) -> list[int]:
    ids = []
    with app.app_context(), service_session() as s:
        for i in range(n):
            ids.append(audit.record(s, group_id, "test.step", actor="pytest", detail={"i": i, "amount": "12.30"}).id)
    return ids


def _verify(app, group_id):
    with app.app_context(), service_session() as s:
        return audit.verify_chain(s, group_id)


def test_intact_chain_verifies(app, group):
    _entries(app, group.group_id, 5)
    report = _verify(app, group.group_id)
    assert report.ok and report.checked >= 5


def test_edited_row_is_reported(app, group, database_url):
    ids = _entries(app, group.group_id, 5)
    admin = create_engine(database_url)
    with admin.begin() as conn:  # an attacker with owner rights edits a row in place
        conn.execute(text("UPDATE audit_log SET detail = '{\"i\": 2, \"amount\": \"1230.00\"}' WHERE id = :id"),
                     {"id": ids[2]})
    admin.dispose()
    report = _verify(app, group.group_id)
    assert report.first_broken_id == ids[2]
    assert "edited" in report.reason


def test_deleted_row_is_reported_at_the_next_entry(app, group, database_url, runner):
    ids = _entries(app, group.group_id, 5)
    admin = create_engine(database_url)
    with admin.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": ids[1]})
    admin.dispose()
    report = _verify(app, group.group_id)
    assert report.first_broken_id == ids[2]
    assert "removed" in report.reason
    result = runner.invoke(args=["audit-verify", "--group", group.code])
    assert result.exit_code == 1
    assert f"BROKEN at entry {ids[2]}" in result.output


def test_other_groups_chains_are_independent(app, group, other_group):
    _entries(app, group.group_id, 2)
    _entries(app, other_group.group_id, 2)
    assert _verify(app, group.group_id).ok
    assert _verify(app, other_group.group_id).ok
