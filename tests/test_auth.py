"""Sign-in: hashes, rate limiting, CSRF, password change, audit of logins."""

from __future__ import annotations

from sqlalchemy import select

from meterhub.db import service_session
from meterhub.tenants.audit import AuditEntry
from meterhub.tenants.models import Operator, Property
from tests.conftest import csrf_token


def test_passwords_are_argon2_hashes(app, group):
    username, password, op_id = group.operator("cashier")
    with app.app_context(), service_session() as s:
        stored = s.get(Operator, op_id).password_hash
    assert stored.startswith("$argon2id$") and password not in stored


def test_wrong_password_then_rate_limit_blocks_even_the_right_one(client, group, login):
    username, password, _ = group.operator("cashier")
    for _ in range(5):
        assert login(username, "wrong password").status_code == 401
    blocked = login(username, password)
    assert blocked.status_code == 429
    assert "Too many failed sign-ins" in blocked.get_data(as_text=True)


def test_unknown_user_gets_the_same_answer(login):
    response = login("nobody-here", "whatever123")
    assert response.status_code == 401
    assert "Wrong username or password" in response.get_data(as_text=True)


def test_post_without_csrf_token_is_rejected_and_changes_nothing(app, client, operator, group):
    operator("group_admin")
    response = client.post("/properties", data={"name": "Sneaky", "code": "SNEAKY"})
    assert response.status_code == 400
    with app.app_context(), service_session() as s:
        assert s.execute(select(Property).where(Property.group_id == group.group_id,
                                                Property.code == "SNEAKY")).first() is None


def test_login_without_csrf_token_is_rejected(client, group):
    username, password, _ = group.operator("cashier")
    response = client.post("/login", data={"username": username, "password": password})
    assert response.status_code == 400


def test_password_change_requires_current_password(app, client, group, login):
    username, password, op_id = group.operator("auditor")
    login(username, password)
    token = csrf_token(client, "/password")
    bad = client.post("/password", data={"csrf_token": token, "current_password": "nope",
                                         "new_password": "new-password-1", "confirm_password": "new-password-1"})
    assert "current password is wrong" in bad.get_data(as_text=True)
    ok = client.post("/password", data={"csrf_token": token, "current_password": password,
                                        "new_password": "new-password-1", "confirm_password": "new-password-1"})
    assert ok.status_code == 302
    client.post("/logout", data={"csrf_token": csrf_token(client, "/password")})
    assert login(username, password).status_code == 401
    assert login(username, "new-password-1").status_code == 302
    with app.app_context(), service_session() as s:
        actions = list(s.execute(select(AuditEntry.action).where(AuditEntry.operator_id == op_id)
                                 .order_by(AuditEntry.id)).scalars())
    assert actions[:4] == ["login", "password.change", "logout", "login.failed"]
    assert actions[-1] == "login"


def test_logout_requires_post(client, operator):
    operator("cashier")
    assert client.get("/logout").status_code == 405
