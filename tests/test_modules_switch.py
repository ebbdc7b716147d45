"""A group that switches a feature module off loses its pages and menu entry; other groups keep them."""

from __future__ import annotations

from tests.conftest import csrf_token


def _settings(client, **modules: bool):
    token = csrf_token(client, "/settings/")
    data = {"csrf_token": token, **{f"module_{k}": "1" for k, on in modules.items() if on}}
    return client.post("/settings/", data=data)


def test_switching_a_module_off_hides_it_for_that_group_only(app, client, operator, group, other_group):
    operator("group_admin")
    assert client.get("/apportion/").status_code == 200
    assert "/apportion/" in client.get("/").get_data(as_text=True)
    # everything on except apportioning
    assert _settings(client, prepaid=True, postpaid=True, billing_items=True, batch=True).status_code == 302
    assert client.get("/apportion/").status_code == 404
    assert "/apportion/" not in client.get("/").get_data(as_text=True)
    assert client.get("/batch/").status_code == 200
    # the other group still has it
    client.post("/logout", data={"csrf_token": csrf_token(client, "/")})
    username, password, _ = other_group.operator("group_admin")
    client.post("/login", data={"username": username, "password": password, "csrf_token": csrf_token(client)})
    assert client.get("/apportion/").status_code == 200
