"""Finding 8: the audit chain is keyed (HMAC) and anchored outside the database, so each forgery is named.

The three forgeries of the hostile test, each followed by ``meterhub audit-verify``: a fabricated entry
inserted with the web app's role; one entry deleted and every later one re-chained with plain SHA-256 (the
service role is refused, so the owner does it); the last 3 entries deleted (caught by the checkpoint).
"""

from __future__ import annotations

import hashlib
import json
from datetime import timezone

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from meterhub.db import service_session
from meterhub.extensions import db
from meterhub.tenants import audit, audit_anchor
from meterhub.tenants.audit_chain import verify
from meterhub.tenants.audit_rekey import legacy_hash, rekey_group


@pytest.fixture()
def chain_app(app, tmp_path):
    """The app with its checkpoints in a folder of this test."""
    app.config["AUDIT_ANCHOR_DIR"] = str(tmp_path / "anchors")
    return app


@pytest.fixture()
def owner(database_url):
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def _entries(app, group_id: int, n: int) -> list[int]:
    with app.app_context(), service_session() as s:
        return [audit.record(s, group_id, "prepaid.topup", actor="cashier1",
                             detail={"i": i, "amount": "300.00"}).id for i in range(n)]


def _anchor(app) -> None:
    with app.app_context():
        audit_anchor.anchor_job()


def _verify(app, group_id: int):
    with app.app_context(), service_session() as s:
        return verify(s, group_id)


def _cli(runner, group) -> tuple[int, str]:
    result = runner.invoke(args=["audit-verify", "--group", group.code])
    return result.exit_code, result.output


def _rows(conn, group_id: int) -> list:
    conn.execute(text("SET LOCAL TIME ZONE 'UTC'"))
    return list(conn.execute(text("SELECT * FROM audit_log WHERE group_id = :g ORDER BY seq"), {"g": group_id}))


def test_intact_chain_and_checkpoint_verify(chain_app, group, runner):
    _entries(chain_app, group.group_id, 4)
    _anchor(chain_app)
    code, output = _cli(runner, group)
    assert code == 0, output
    assert "chain intact (checkpoint #" in output


def test_fabricated_entry_inserted_with_the_app_role_is_named(chain_app, group, runner):
    _entries(chain_app, group.group_id, 3)
    _anchor(chain_app)
    app_role = create_engine(chain_app.config["APP_DATABASE_URL"])
    try:
        with app_role.begin() as conn:  # what the web app's credentials allow: INSERT under the group's RLS
            conn.execute(text("SELECT set_config('meterhub.group_id', :g, true)"), {"g": str(group.group_id)})
            last = conn.execute(text("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")).one()
            fake = {"group_id": group.group_id, "seq": last.seq + 1, "prev": last.hash}
            fake["hash"] = hashlib.sha256(json.dumps(fake).encode()).hexdigest()
            forged_id = conn.execute(text(
                "INSERT INTO audit_log (group_id, seq, at, actor, action, object_type, object_id, detail, ip, "
                "prev_hash, hash) VALUES (:group_id, :seq, now(), 'admin', 'prepaid.refund', 'account', '1', "
                "'{\"amount\": \"300.00\"}', '', :prev, :hash) RETURNING id"), fake).scalar_one()
    finally:
        app_role.dispose()
    later = _entries(chain_app, group.group_id, 2)  # the platform goes on writing after the forgery

    report = _verify(chain_app, group.group_id)
    assert [(p.kind, p.entry_id) for p in report.problems] == [("forged", forged_id)]
    code, output = _cli(runner, group)
    assert code == 1
    assert f"BROKEN at entry {forged_id}" in output and "does not verify with the audit key" in output
    assert "1 problem(s) in 6 entries" in output  # the entries written after it still verify
    assert later[0] > forged_id


@pytest.mark.parametrize("renumber", [False, True], ids=["seq-kept", "seq-renumbered"])
def test_deleted_entry_with_the_rest_rehashed_in_sha256_is_named(chain_app, group, runner, owner, renumber):
    ids = _entries(chain_app, group.group_id, 8)
    _anchor(chain_app)
    victim = ids[3]

    service = create_engine(chain_app.config["SERVICE_DATABASE_URL"])
    try:  # the service role may no longer delete or rewrite the log at all
        for statement in ("DELETE FROM audit_log WHERE id = :id", "UPDATE audit_log SET hash = 'x' WHERE id = :id"):
            with pytest.raises(DBAPIError, match="permission denied"), service.begin() as conn:
                conn.execute(text(statement), {"id": victim})
    finally:
        service.dispose()

    with owner.begin() as conn:  # so the owner does it, re-chaining every later entry as the old code did
        conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": victim})
        rows = _rows(conn, group.group_id)
        prev = audit.GENESIS
        for n, row in enumerate(rows, start=1):
            seq = n if renumber else row.seq
            if row.id > victim:
                digest = legacy_hash(prev, row)
                conn.execute(text("UPDATE audit_log SET seq = -seq WHERE id = :id"), {"id": row.id})
                conn.execute(text("UPDATE audit_log SET seq = :s, prev_hash = :p, hash = :h WHERE id = :id"),
                             {"s": seq, "p": prev, "h": digest, "id": row.id})
                prev = digest
            else:
                prev = row.hash

    report = _verify(chain_app, group.group_id)
    kinds = {(p.kind, p.entry_id) for p in report.problems}
    assert {("forged", i) for i in ids[4:]} <= kinds, report.problems
    code, output = _cli(runner, group)
    assert code == 1
    for i in ids[4:]:
        assert f"entry {i} (#" in output
    if renumber:  # the chain now ends one short of the checkpoint
        assert "truncated" in output and "entry #8 is missing" in output
    else:
        assert f"entry #4 is missing (deleted) after entry {ids[2]}, before entry {ids[4]}" in output


def test_truncated_log_is_caught_by_the_checkpoint(chain_app, group, runner, owner):
    ids = _entries(chain_app, group.group_id, 6)
    _anchor(chain_app)
    with owner.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = ANY(:ids)"), {"ids": ids[-3:]})
    report = _verify(chain_app, group.group_id)
    assert [(p.kind, p.entry_id) for p in report.problems] == [("truncated", ids[-1])]
    code, output = _cli(runner, group)
    assert code == 1
    assert f"entries #4 to #6 (3) are missing after entry {ids[2]} up to entry {ids[-1]}" in output

    # The job never anchors the shortened chain, even once new entries follow the truncation.
    _entries(chain_app, group.group_id, 2)
    _anchor(chain_app)
    with chain_app.app_context():
        assert audit_anchor.read_checkpoint(group.group_id).last_id == ids[-1]
    assert _cli(runner, group)[0] == 1


def test_an_edited_checkpoint_file_is_reported(chain_app, group, runner):
    _entries(chain_app, group.group_id, 2)
    _anchor(chain_app)
    with chain_app.app_context():
        path = audit_anchor.anchor_dir() / f"group-{group.group_id}.json"
    data = json.loads(path.read_text())
    data["seq"] -= 1  # hide the newest entry from the checkpoint
    path.write_text(json.dumps(data))
    code, output = _cli(runner, group)
    assert code == 1 and "the signature does not verify" in output


def test_another_key_verifies_nothing(chain_app, group):
    ids = _entries(chain_app, group.group_id, 2)
    chain_app.extensions["meterhub.audit_key"] = b"x" * 32  # an attacker's guess, or the wrong instance
    report = _verify(chain_app, group.group_id)
    assert [p.entry_id for p in report.problems if p.kind == "forged"] == ids


def _legacy_chain(conn, group_id: int, n: int) -> list[int]:
    """Entries as the pre-0017 code wrote them (plain SHA-256, times in UTC)."""
    from meterhub.models import utcnow

    prev, ids = audit.GENESIS, []
    for i in range(n):
        row = conn.execute(text(
            "INSERT INTO audit_log (group_id, seq, at, actor, action, object_type, object_id, detail, ip, "
            "prev_hash, hash) VALUES (:g, :s, :at, 'cli', 'old.step', '', '', CAST(:d AS jsonb), '', :p, '') "
            "RETURNING *"), {"g": group_id, "s": i + 1, "at": utcnow(), "d": json.dumps({"i": i}), "p": prev}).one()
        digest = legacy_hash(prev, type("Row", (), {**row._mapping, "at": row.at.astimezone(timezone.utc)}))
        conn.execute(text("UPDATE audit_log SET hash = :h WHERE id = :id"), {"h": digest, "id": row.id})
        prev, ids = digest, ids + [row.id]
    return ids


@pytest.mark.parametrize("tampered", [False, True], ids=["intact", "tampered-before-upgrade"])
def test_upgrade_rekeys_old_entries_and_records_the_old_verdict(chain_app, group, owner, tampered):
    with owner.begin() as conn:
        conn.execute(text("SET LOCAL TIME ZONE 'UTC'"))
        ids = _legacy_chain(conn, group.group_id, 4)
        if tampered:
            conn.execute(text("UPDATE audit_log SET detail = '{\"i\": 99}' WHERE id = :id"), {"id": ids[1]})
    with chain_app.app_context(), owner.begin() as conn:
        verdict = rekey_group(conn, audit.audit_key(), group.group_id)
    report = _verify(chain_app, group.group_id)
    assert report.ok and report.checked == 5, report.problems
    with owner.connect() as conn:
        closing = conn.execute(text("SELECT action, detail FROM audit_log WHERE group_id = :g ORDER BY seq DESC "
                                    "LIMIT 1"), {"g": group.group_id}).one()
    assert closing.action == "audit.rekey" and closing.detail["legacy_chain"] == verdict
    assert verdict == (f"broken at entry {ids[1]}: content does not match its hash (the row was edited)"
                       if tampered else "intact")


def test_the_console_names_the_forged_entry(chain_app, group, operator, client, owner):
    ids = _entries(chain_app, group.group_id, 3)
    with owner.begin() as conn:
        conn.execute(text("UPDATE audit_log SET detail = '{\"amount\": \"3000.00\"}' WHERE id = :id"), {"id": ids[1]})
    operator("group_admin", all_properties=True)
    page = client.get("/audit/?verify=1").get_data(as_text=True)
    assert f"entry {ids[1]}" in page and "does not verify with the audit key" in page


def test_upgrading_a_database_with_an_unkeyed_log_rekeys_it(service_urls, tmp_path):
    """The upgrade path for real: a log written before migration 0017, then ``db upgrade`` to head."""
    import uuid
    from pathlib import Path

    from flask_migrate import upgrade

    from meterhub.app import create_app
    from tests.conftest import _config

    name = f"meterhub_upgrade_{uuid.uuid4().hex[:8]}"
    url = make_url(service_urls["postgres"]).set(database=name).render_as_string(hide_password=False)
    app = create_app({**_config(url, service_urls), "AUDIT_ANCHOR_DIR": str(tmp_path)})
    migrations = str(Path(__file__).resolve().parents[2] / "meterhub" / "migrations")
    engine = create_engine(url)
    try:
        with app.app_context():
            upgrade(directory=migrations, revision="0016")
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL TIME ZONE 'UTC'"))
            group_id = conn.execute(text("INSERT INTO groups (name, code, timezone, modules, created_at) VALUES "
                                         "('Old', 'old', 'Asia/Shanghai', '{}', now()) RETURNING id")).scalar_one()
            prev = audit.GENESIS
            for i in range(3):  # as the old code wrote them: no seq, plain SHA-256
                row = conn.execute(text(
                    "INSERT INTO audit_log (group_id, at, actor, action, object_type, object_id, detail, ip, "
                    "prev_hash, hash) VALUES (:g, now() + :i * interval '1 second', 'cli', 'old.step', '', '', "
                    "'{}', '', :p, '') RETURNING *"), {"g": group_id, "i": i, "p": prev}).one()
                prev = legacy_hash(prev, row)
                conn.execute(text("UPDATE audit_log SET hash = :h WHERE id = :id"), {"h": prev, "id": row.id})
        with app.app_context():
            upgrade(directory=migrations)
            with service_session() as s:
                report = verify(s, group_id)
        assert report.ok and report.checked == 4, report.problems
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT seq, action, detail FROM audit_log WHERE group_id = :g ORDER BY seq"),
                                {"g": group_id}).all()
        assert [r.seq for r in rows] == [1, 2, 3, 4]
        assert rows[-1].action == "audit.rekey" and rows[-1].detail["legacy_chain"] == "intact"
    finally:
        engine.dispose()
        with app.app_context():
            db.engine.dispose()
        from meterhub.db import dispose_service_engines

        dispose_service_engines()
        admin = create_engine(make_url(service_urls["postgres"]).set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"), {"d": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()
