"""Finding 5 of issue 22: money is taken while Redis is down; what it would enqueue waits in the outbox.

The app here uses a Redis server of its own (started and stopped by the test; never the machine's 6379). While
it is down: API top-ups (with idempotent retries), the cashier counter and signed payment callbacks book the
money in PostgreSQL; their commands stay rows for the dispatcher, and the jobs they hand to rq (alarm
notifications, the sandbox payment callback) wait in ``job_outbox`` until the elected scheduler drains it.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from meterhub.app import create_app
from meterhub.commands.models import Command
from meterhub.db import service_session, use_group
from meterhub.extensions import db
from meterhub.outbox import OutboxJob, pending
from meterhub.redis_conn import get_queue
from meterhub.rqschedule import ScheduledJobs
from meterhub.services.redis import embedded_server_binary
from tests.api.world import bearer, make_token, open_site
from tests.conftest import _config, csrf_token
from tests.payments.conftest import Shop, make_channel, sandbox_body
from tests.recovery.conftest import wait_for


class PrivateRedis:
    """A redis-server on a free port of its own, stopped and started again by the test."""

    def __init__(self, workdir) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.workdir, self.proc = workdir, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen([str(embedded_server_binary()), "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for(self._answers, 10, "the private Redis starts")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture()
def redis_server(tmp_path):
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def own_app(database_url, service_urls, redis_server):
    app = create_app({**_config(database_url, {**service_urls, "redis": redis_server.url}),
                      "REDIS_NAMESPACE": f"recovery-{uuid.uuid4().hex[:8]}"})
    yield app
    with app.app_context():
        db.engine.dispose()


def _drain(app) -> int:
    elector = ScheduledJobs(app, ("default", "commands", "reports"))
    return elector.drain_outbox()


def _outbox(app, group_id: int) -> list[OutboxJob]:
    with app.app_context(), service_session() as s:
        return list(s.execute(select(OutboxJob).where(OutboxJob.group_id == group_id).order_by(OutboxJob.id))
                    .scalars())


def test_api_topups_and_alarms_while_redis_is_down(own_app, group, redis_server):
    app = own_app
    site = open_site(app, group)
    token = make_token(app, group)
    client = app.test_client()
    redis_server.stop()
    url = f"/api/v1/accounts/{site.account_id}/topups"
    for n in range(3):
        response = client.post(url, json={"amount": "10.00"}, headers={**bearer(token), "Idempotency-Key": f"r{n}"})
        assert response.status_code == 201, response.get_data(as_text=True)  # was 500 for every top-up
    again = client.post(url, json={"amount": "10.00"}, headers={**bearer(token), "Idempotency-Key": "r0"})
    assert again.status_code == 200 and again.get_json()["replayed"]
    assert Decimal(again.get_json()["balance"]) == Decimal("30.00")
    with app.app_context(), service_session() as s:  # the switch-on is a row the dispatcher sends later
        assert s.execute(select(func.count()).select_from(Command).where(
            Command.meter_id == site.meter_id, Command.state == "queued")).scalar() >= 1
        from meterhub.alarms.engine import raise_alarm

        alarm_id = raise_alarm(s, group.group_id, "offline", meter_id=site.meter_id).id
    held = _outbox(app, group.group_id)
    assert [(r.path, r.kwargs) for r in held] == [("meterhub.alarms.dispatch:notify_alarm", {"alarm_id": alarm_id})]
    assert "Connection" in held[0].last_error
    assert _drain(app) == 0  # still down: nothing lost, nothing sent
    redis_server.start()  # back, empty (no persistence)
    assert _drain(app) == 1
    assert _outbox(app, group.group_id) == []
    with app.app_context():
        jobs = get_queue("default").get_jobs()
        assert [j.kwargs for j in jobs] == [{"alarm_id": alarm_id}]
        with service_session() as s:
            assert pending(s) == 0


def test_counter_topup_while_redis_is_down(own_app, group, redis_server):
    app = own_app
    site = open_site(app, group)
    username, password, _ = group.operator("cashier")
    client = app.test_client()
    signed_in = client.post("/login", data={"username": username, "password": password,
                                            "csrf_token": csrf_token(client)})
    assert signed_in.status_code == 302
    page = client.get(f"/prepaid/accounts/{site.account_id}").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    redis_server.stop()
    response = client.post(f"/prepaid/accounts/{site.account_id}/topup",
                           data={"amount": "25.00", "channel": "cash", "key": uuid.uuid4().hex, "csrf_token": token})
    assert response.status_code == 302 and "/receipt" in response.headers["Location"], response.get_data(as_text=True)
    assert Shop(app, site, 0, "").balance() == Decimal("25.00")


def test_payment_callback_and_pay_page_while_redis_is_down(own_app, group, redis_server):
    app = own_app
    site = open_site(app, group)
    channel_id, key = make_channel(app, group.group_id)
    shop = Shop(app, site, channel_id, key)
    app.config["SANDBOX_RETRY_INTERVALS"] = [5, 30]
    out_trade_no, pay_url, _ = shop.order("30.00")
    redis_server.stop()
    body = sandbox_body("SBX-1-" + uuid.uuid4().hex, out_trade_no, "30.00")
    from meterhub.payments.sandbox import sign_callback

    response = app.test_client().post(f"/payments/notify/{key}", data=body, headers=sign_callback(
        shop.private_key(), body))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert shop.balance() == Decimal("30.00") and shop.outcomes() == ["accepted"]
    # the sandbox's pay page queues its signed callback: held in the outbox by the web request itself
    from meterhub.payments import sandbox

    with app.test_request_context("/pay/"):
        use_group(group.group_id)
        sandbox.enqueue_callback(4242, group.group_id, "http://localhost/payments/notify/x")
    (held,) = _outbox(app, group.group_id)
    assert held.kwargs["trade_id"] == 4242 and held.kwargs["retry_intervals"] == [5, 30]
    redis_server.start()
    started = time.monotonic()
    elector = ScheduledJobs(app, ("default",))
    elector.start()
    try:
        wait_for(lambda: not _outbox(app, group.group_id), 20, "the elected scheduler drains the outbox")
    finally:
        elector.stop()
    assert time.monotonic() - started < 20
    with app.app_context():
        (job,) = get_queue("default").get_jobs()
        assert job.kwargs == {"trade_id": 4242, "group_id": group.group_id,
                              "notify_url": "http://localhost/payments/notify/x"}
        assert job.retries_left == 2
