"""Issue 22: sign-in and the signed-in console while Redis is down.

The app uses a Redis server of its own (stopped and started by the test). While it is down: the console's pages
answer (never a 500; what needs Redis says so with a 503), an operator signs in, and failed sign-ins are counted
in PostgreSQL so the throttle still blocks after the allowed failures (never unlimited guessing); the counts made
during the outage keep counting after Redis is back.
"""

from __future__ import annotations

import re
import socket
import uuid

import pytest
import redis
from sqlalchemy import text

from meterhub.errors import RateLimited
from meterhub.extensions import db
from meterhub.tenants.auth import LoginThrottle
from meterhub.tenants.login_failures import key_hash
from tests.conftest import Tenant, csrf_token
from tests.recovery.test_redis_down import own_app, redis_server  # noqa: F401  (the app on a Redis of its own)


def _login(client, username: str, password: str):
    return client.post("/login", data={"username": username, "password": password, "csrf_token": csrf_token(client)})


def _console_links(client) -> list[str]:
    page = client.get("/").get_data(as_text=True)
    links = {href.split("#")[0] for href in re.findall(r'href="(/[^"]*)"', page)}
    return sorted(link for link in links if link and not link.startswith(("/static/", "/logout", "/portal")))


def test_console_signs_in_and_serves_pages_while_redis_is_down_and_the_throttle_still_holds(own_app, redis_server):
    tenant = Tenant(own_app, "r")
    username, password, _ = tenant.operator("group_admin")
    signed_in = own_app.test_client()
    assert _login(signed_in, username, password).status_code == 302
    links = _console_links(signed_in)
    assert len(links) >= 5, links

    redis_server.stop()
    answers = {link: signed_in.get(link).status_code for link in links}
    assert all(code < 500 or code == 503 for code in answers.values()), answers
    assert sum(code == 200 for code in answers.values()) >= len(answers) // 2, answers
    for link, code in answers.items():  # a 503 says what is wrong
        if code == 503:
            assert "Redis" in signed_in.get(link).get_data(as_text=True)

    assert _login(own_app.test_client(), username, password).status_code == 302  # a fresh sign-in works

    limit = own_app.config["LOGIN_MAX_FAILURES"]
    attacker = own_app.test_client()
    for _ in range(limit):
        assert _login(attacker, username, "not the password").status_code == 401
    blocked = _login(attacker, username, password)
    assert blocked.status_code == 429, "a Redis outage must not open sign-in to unlimited guessing"
    assert int(blocked.headers["Retry-After"]) > 0
    assert "Too many failed sign-ins" in blocked.get_data(as_text=True)
    with own_app.app_context(), db.engine.connect() as conn:
        stored = set(conn.execute(text("SELECT key_hash FROM login_failures")).scalars())
    namespace = own_app.config["REDIS_NAMESPACE"]
    assert key_hash(f"{namespace}:login:user:{username}") in stored  # hashed: no user name in the table
    assert not any(username in key for key in stored)

    redis_server.start()  # empty: the failures counted in PostgreSQL still count for their window
    assert _login(attacker, username, password).status_code == 429


@pytest.mark.parametrize("suffix", ["", ":portal", ":portal-send"])
def test_every_throttle_counts_in_postgres_while_redis_cannot_be_reached(app, suffix):
    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    account, ip = f"user-{uuid.uuid4().hex[:8]}", "192.0.2.7"
    with app.app_context():
        throttle = LoginThrottle(dead, 3, 60, f"t-{uuid.uuid4().hex[:6]}{suffix}", engine=db.engine)
        for _ in range(3):
            throttle.check(account, ip)
            throttle.failed(account, ip)
        with pytest.raises(RateLimited) as err:
            throttle.check(account, ip)
        assert 0 < err.value.retry_after <= 60
        throttle.succeeded(account, ip)  # the account's count is forgotten, the address keeps its own
        throttle.check(account, ip)
        with pytest.raises(redis.RedisError):  # without an engine, as before: the error is raised
            LoginThrottle(dead, 3, 60, "t").check(account, ip)


class _Checkouts:
    """The most database connections the app's engine had checked out at once."""

    def __init__(self, engine) -> None:
        from sqlalchemy import event

        self.now = self.most = 0
        event.listen(engine.pool, "checkout", self._out)
        event.listen(engine.pool, "checkin", self._in)

    def _out(self, *_args) -> None:
        self.now += 1
        self.most = max(self.most, self.now)

    def _in(self, *_args) -> None:
        self.now -= 1

    def reset(self) -> None:
        self.most = self.now


def test_a_sign_in_never_holds_two_database_connections_while_redis_is_down(own_app, redis_server):
    """Behind PgBouncer a pool is small: the throttle's own connection must not overlap the request's."""
    tenant = Tenant(own_app, "c")
    username, password, _ = tenant.operator("group_admin")
    redis_server.stop()
    with own_app.app_context():
        checkouts = _Checkouts(db.engine)
    client = own_app.test_client()
    token = csrf_token(client)
    seen = {}
    for name, post in {
        "console wrong password": lambda: client.post("/login", data={
            "username": username, "password": "nope", "csrf_token": token}),
        "console unknown user": lambda: client.post("/login", data={
            "username": "nobody-here", "password": "nope", "csrf_token": token}),
        "console sign-in": lambda: client.post("/login", data={
            "username": username, "password": password, "csrf_token": token}),
        "portal wrong password": lambda: client.post("/portal/login", data={  # signed in to the console
            "phone": "13900000001", "password": "nope", "csrf_token": csrf_token(client, "/portal/login")}),
        "portal code asked": lambda: client.post("/portal/code", data={
            "phone": "13900000001", "csrf_token": csrf_token(client, "/portal/login")}),
        "portal wrong code": lambda: client.post("/portal/code/verify", data={
            "code": "000000", "csrf_token": csrf_token(client, "/portal/login")}),
    }.items():
        checkouts.reset()
        answer = post()
        assert answer.status_code in (200, 302, 401, 503), (name, answer.status_code)  # codes live in Redis: 503
        seen[name] = checkouts.most
    assert all(most <= 1 for most in seen.values()), seen
