"""Notifications end to end: SMTP (aiosmtpd), signed webhook with retries, SMS gateway, portal messages,
throttling, quiet hours, secrets encrypted and masked."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select, text

from meterhub.alarms import raise_alarm
from meterhub.alarms import secrets as secret_store
from meterhub.alarms.dispatch import notify_alarm, release_held
from meterhub.alarms.models import NotificationLog, NotifierConfig, PortalMessage
from meterhub.db import service_session
from tests.alarms.conftest import run_jobs
from tests.alarms.helpers import make_site
from tests.conftest import csrf_token


@pytest.fixture(autouse=True)
def _empty_queue(app, group):
    """Jobs left by other tests or by the Tenant fixture's alarms (deliveries to servers that are gone,
    notifications of alarms that are not this test's) must not run here; nor may the coalesced notify job's
    waiting mark and items (a mark whose job was emptied away holds new requests back for a minute)."""
    from meterhub import soon
    from meterhub.alarms.dispatch import NOTIFY_RAISED
    from meterhub.redis_conn import get_queue, get_redis

    def empty() -> None:
        with app.app_context():
            get_queue("default").empty()
            get_redis().delete(*soon._keys(NOTIFY_RAISED))

    empty()
    yield
    empty()


class Recorder(BaseHTTPRequestHandler):
    """Answers 500 for the first ``fail`` requests to /hook, then 200; keeps what it received."""

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server = self.server
        server.received.append((dict(self.headers), body))
        ok = self.path != "/hook" or sum(1 for h, b in server.received if b"alarm.raised" in b) > server.fail
        self.send_response(200 if ok else 500)
        self.end_headers()
        self.wfile.write(b'{"ok": true}' if ok else b"busy")

    def log_message(self, *args):
        pass


@pytest.fixture()
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.received, server.fail = [], 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture()
def smtp_server():
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message as MessageHandler

    class Box(MessageHandler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def handle_message(self, message):
            self.messages.append(message)

    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    box = Box()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, box
    controller.stop()


def _config(app, group_id, notifier, recipients, secrets=None, **kw):
    with app.app_context(), service_session() as s:
        config = NotifierConfig(group_id=group_id, notifier=notifier, name=notifier, recipients=recipients,
                                settings=kw.pop("settings", {}), kinds=kw.pop("kinds", []), **kw)
        s.add(config)
        s.flush()
        config.secrets = secret_store.merge({}, secrets or {}, f"{group_id}:{config.id}")
        return config.id


def _raise(app, site, kind="overload", **subject):
    subject = subject or {"meter_id": site.meters[0]}
    with app.app_context(), service_session() as s:
        return raise_alarm(s, site.group_id, kind, detail={"power_kw": 7.5, "limit_kw": 5}, **subject).id


def _log(app, group_id):
    with app.app_context(), service_session() as s:
        return [(r.notifier, r.recipient, r.status, r.attempts) for r in s.execute(
            select(NotificationLog).where(NotificationLog.group_id == group_id).order_by(NotificationLog.id)).scalars()]


def test_email_webhook_sms_and_portal(app, group, http_server, smtp_server):
    app.config["NOTIFY_RETRY_INTERVALS"] = [0, 0, 0]
    port, box = smtp_server
    site = make_site(app, group)
    url = f"http://127.0.0.1:{http_server.server_address[1]}/hook"
    _config(app, site.group_id, "email", ["ops@example.com"], settings={"host": "127.0.0.1", "port": str(port),
                                                                          "from": "meterhub@example.com"})
    _config(app, site.group_id, "webhook", [url], {"secret": "s3cret"})
    _config(app, site.group_id, "sms", ["13900000000"], {"api_key": "KEY1"},
            settings={"provider": "http_json", "url": url + "/sms", "templates": {"overload": "OVL {meter} {power_kw}"}})
    _config(app, site.group_id, "portal", [])
    http_server.fail = 2  # the webhook fails twice, then succeeds on the third try
    alarm_id = _raise(app, site)
    run_jobs(app)  # notify (enqueued by the alarm_raised hook) and the deliveries with their retries
    assert sorted(_log(app, site.group_id)) == sorted([
        ("email", "ops@example.com", "sent", 1), ("webhook", url, "sent", 3),
        ("sms", "13900000000", "sent", 1), ("portal", f"account:{site.account_id}", "sent", 1)])
    (mail,) = box.messages
    assert mail["To"] == "ops@example.com" and "Overload" in mail["Subject"] and "7.5 kW" in mail.get_payload()
    hooks = [(h, b) for h, b in http_server.received if not b.startswith(b'{"sender"') and b"alarm.raised" in b]
    headers, body = hooks[-1]
    expected = hmac.new(b"s3cret", headers["X-Meterhub-Timestamp"].encode() + b"." + body, hashlib.sha256)
    assert headers["X-Meterhub-Signature"] == f"sha256={expected.hexdigest()}"
    payload = json.loads(body)
    assert payload["alarm"]["id"] == alarm_id and payload["alarm"]["kind"] == "overload"
    sms = [(h, json.loads(b)) for h, b in http_server.received if b'"to"' in b]
    assert len(sms) == 1 and sms[0][0]["Authorization"] == "Bearer KEY1"
    assert sms[0][1]["to"] == "13900000000" and sms[0][1]["text"].startswith("OVL ") and "7.5" in sms[0][1]["text"]
    with app.app_context(), service_session() as s:
        (msg,) = s.execute(select(PortalMessage).where(PortalMessage.group_id == site.group_id)).scalars()
        assert msg.account_id == site.account_id and msg.alarm_id == alarm_id


def test_webhook_gives_up_after_the_retries(app, group, http_server):
    app.config["NOTIFY_RETRY_INTERVALS"] = [0, 0]
    site = make_site(app, group, account=False)
    url = f"http://127.0.0.1:{http_server.server_address[1]}/hook"
    _config(app, site.group_id, "webhook", [url], {"secret": "x"})
    http_server.fail = 99
    _raise(app, site)
    run_jobs(app)
    assert _log(app, site.group_id) == [("webhook", url, "failed", 3)]
    assert len(http_server.received) == 3


def test_throttling_per_recipient(app, group, http_server):
    site = make_site(app, group, n=3, account=False)
    url = f"http://127.0.0.1:{http_server.server_address[1]}/hook"
    _config(app, site.group_id, "webhook", [url], throttle_minutes=30, max_per_hour=2)
    first = _raise(app, site, meter_id=site.meters[0])
    with app.app_context():
        assert notify_alarm(first) == 1
        with service_session() as s:  # the same subject clears and comes back at once: throttled
            s.execute(text("UPDATE alarms SET state = 'cleared' WHERE id = :a"), {"a": first})
        again = _raise(app, site, meter_id=site.meters[0])
        assert notify_alarm(again) == 0
        assert notify_alarm(_raise(app, site, meter_id=site.meters[1])) == 1
        assert notify_alarm(_raise(app, site, meter_id=site.meters[2])) == 0  # max 2 per hour for the recipient
    assert [r[2] for r in _log(app, site.group_id) if r[0] == "webhook"][-4:] == ["queued", "throttled", "queued",
                                                                                   "throttled"]


def test_quiet_hours_hold_messages_until_they_end(app, group, http_server):
    site = make_site(app, group, account=False)
    url = f"http://127.0.0.1:{http_server.server_address[1]}/hook"
    _config(app, site.group_id, "webhook", [url], quiet_start="22:00", quiet_end="07:00")
    alarm_id = _raise(app, site)
    night = datetime(2026, 3, 1, 15, 30, tzinfo=UTC)  # 23:30 in Asia/Shanghai
    with app.app_context():
        from meterhub.redis_conn import get_queue

        get_queue("default").empty()  # the hook's own notify job runs at the real time: we plan at night
        assert notify_alarm(alarm_id, now=night) == 0
        with service_session() as s:
            row = s.execute(select(NotificationLog).where(NotificationLog.alarm_id == alarm_id)).scalar_one()
            assert row.status == "held" and row.send_after == datetime(2026, 3, 1, 23, 0, tzinfo=UTC)
        assert release_held(datetime(2026, 3, 1, 22, 59, tzinfo=UTC)) == 0
        assert release_held(datetime(2026, 3, 1, 23, 0, tzinfo=UTC)) == 1
    run_jobs(app)
    assert _log(app, site.group_id) == [("webhook", url, "sent", 1)]


def test_secrets_encrypted_at_rest_and_masked_in_the_console(app, client, group, operator):
    operator("group_admin")
    token = csrf_token(client, "/alarms/notifiers")
    response = client.post("/alarms/notifiers", data={"csrf_token": token, "notifier": "email", "name": "Mail"})
    edit = response.headers["Location"]
    client.post(edit, data={"csrf_token": token, "host": "smtp.example.com", "password": "hunter2",
                            "recipients": "a@example.com"})
    page = client.get(edit).get_data(as_text=True)
    assert "hunter2" not in page and secret_store.MASK in page
    client.post(edit, data={"csrf_token": token, "host": "smtp2.example.com", "password": secret_store.MASK})
    with app.app_context(), service_session() as s:
        config = s.execute(select(NotifierConfig).where(NotifierConfig.group_id == group.group_id,
                                                        NotifierConfig.name == "Mail")).scalar_one()
        raw = s.execute(text("SELECT secrets::text FROM notifier_configs WHERE id = :i"), {"i": config.id}).scalar()
        assert "hunter2" not in raw and config.settings["host"] == "smtp2.example.com"
        assert secret_store.reveal(config.secrets, f"{group.group_id}:{config.id}") == {"password": "hunter2"}
        with pytest.raises(ValueError):  # bound to its owner: useless in another group's row
            secret_store.decrypt(config.secrets["password"], f"{group.group_id + 1}:{config.id}:password")


def test_a_burst_beyond_the_first_attempts_budget_goes_to_deliver_jobs(app, group, http_server, monkeypatch):
    """The first attempts of a burst are made within a time budget (a dead endpoint must not hold the event job
    past its timeout, leaving planned messages without a job); the rest are sent by deliver jobs."""
    from meterhub.alarms import dispatch

    app.config["NOTIFY_RETRY_INTERVALS"] = [0]
    monkeypatch.setattr(dispatch, "SEND_BUDGET_S", -1)  # spent before the first attempt
    site = make_site(app, group, n=2, account=False)
    url = f"http://127.0.0.1:{http_server.server_address[1]}/hook"
    _config(app, site.group_id, "webhook", [url], {"secret": "s"})
    for meter in site.meters[:2]:
        _raise(app, site, meter_id=meter)
    run_jobs(app)  # notify_raised (nothing tried in it), then the deliver jobs
    assert [r[2:] for r in _log(app, site.group_id) if r[0] == "webhook"] == [("sent", 1), ("sent", 1)]
