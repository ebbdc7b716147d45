"""Devices authenticate: each MQTT gateway signs in with its own password and may use only its own topic.

Against a real embedded amqtt broker (meterhub's auth and topic plugins, gateways checked against the database)
and a real Mosquitto run on the files ``meterhub mqtt export-auth`` writes: anonymous clients and wrong passwords
are refused, gateway A's message on gateway B's topic never reaches the ingest (finding: an anonymous client
wrote 123456.78 kWh into another group's meter), and a gateway's own readings go end to end into ``readings``.
The console shows a new password once and stores only its hash.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select, text

from bench.common import Mosquitto
from meterhub.db import service_session
from meterhub.devices.models import Gateway
from meterhub.mqtt_auth.credentials import Credentials, issue_gateway_password, service_credentials, with_credentials
from meterhub.mqtt_auth.passwords import hash_password, verify_password
from meterhub.services.mqtt import start_embedded_mqtt
from tests.conftest import csrf_token
from tests.mqtt.conftest import RunningWorker, release
from tests.timeseries.factories import make_fleet

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def _issue(app, gateway_id: int) -> Credentials:
    with app.app_context(), service_session() as s:
        return issue_gateway_password(s.get(Gateway, gateway_id))


def _connect(port: int, username: str | None, password: str | None, client_id: str | None = None) -> str:
    """The broker's answer to a CONNECT (``Success``, ``Not authorized``, ...)."""
    answered: list[str] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or username or "anonymous-probe")
    if username is not None:
        client.username_pw_set(username, password)

    def on_connect(c, userdata, flags, reason, properties):
        answered.append(str(reason))
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda c, u, flags, reason, props: done.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    done.wait(10)
    client.disconnect()
    client.loop_stop()
    return answered[0] if answered else "no answer"


class Gateway_:
    """A connected MQTT client signed in as a gateway (or any user)."""

    def __init__(self, port: int, credentials: Credentials, client_id: str | None = None) -> None:
        self.connected = threading.Event()
        self.granted: list[list[bool]] = []
        self.subscribed = threading.Event()
        self.received: list[str] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or credentials.username)
        self.client.on_message = lambda c, u, message: self.received.append(message.topic)
        self.client.username_pw_set(credentials.username, credentials.password)
        self.client.on_connect = lambda c, u, f, reason, p: None if reason.is_failure else self.connected.set()
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.connected.wait(10), f"{credentials.username} could not sign in"

    def _on_subscribe(self, client, userdata, mid, codes, properties) -> None:
        self.granted.append([not code.is_failure for code in codes])
        self.subscribed.set()

    def subscribe(self, topic: str) -> bool:
        self.subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(10)
        return self.granted[-1][0]

    def publish(self, topic: str, payload: dict, timeout: float = 10) -> None:
        self.client.publish(topic, json.dumps(payload).encode(), qos=1).wait_for_publish(timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        release(self.client)


def _connect_with_will(port: int, credentials: Credentials, will_topic: str, will: bytes) -> int:
    """CONNECT (MQTT 3.1.1) with a will, then drop the connection without DISCONNECT (the will is due);
    returns the CONNACK return code."""
    def field(value: bytes) -> bytes:
        return struct.pack("!H", len(value)) + value

    flags = 0x80 | 0x40 | 0x08 | 0x04 | 0x02  # user, password, will QoS 1, will, clean session
    body = (field(b"MQTT") + bytes([4, flags]) + struct.pack("!H", 30) + field(credentials.username.encode())
            + field(will_topic.encode()) + field(will) + field(credentials.username.encode())
            + field(credentials.password.encode()))
    length, remaining = b"", len(body)
    while True:
        remaining, digit = divmod(remaining, 128)
        length += bytes([digit | (0x80 if remaining else 0)])
        if not remaining:
            break
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\x10" + length + body)
        connack = sock.recv(4)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST: abrupt
    return connack[3] if len(connack) == 4 else -1


def _reading(seq: int, energy: str) -> dict:
    return {"seq": seq, "ts": (NOW - timedelta(minutes=5)).isoformat(),
            "readings": [{"address": "1", "values": {"energy_kwh": energy}}]}


def _stored(app, meter_id: int) -> list[Decimal]:
    with app.app_context(), service_session() as s:
        return list(s.execute(text("SELECT energy_kwh FROM readings WHERE meter_id = :m"), {"m": meter_id}).scalars())


@pytest.fixture()
def amqtt(app, tmp_path):
    """The embedded amqtt broker as ``make run`` starts it, its gateways checked against the test database."""
    instance = tmp_path / "instance"
    service = start_embedded_mqtt(instance, port=0, auth_database_url=app.config["SERVICE_DATABASE_URL"])
    yield service, int(service.url.rsplit(":", 1)[1]), service_credentials(instance)
    service.stop()


@pytest.fixture()
def two_gateways(app, group, other_group):
    """Gateway A of one group and gateway B of another, each with one meter at address 1 and a password."""
    a, b = make_fleet(app, other_group), make_fleet(app, group)
    return (a, _issue(app, a.gateway_id)), (b, _issue(app, b.gateway_id))


def _assert_sign_in_rules(app, port: int, service: Credentials, a, a_credentials: Credentials) -> None:
    assert _connect(port, None, None) == "Not authorized"  # anonymous
    assert _connect(port, a_credentials.username, "wrong-password") == "Not authorized"
    assert _connect(port, a_credentials.username, "") == "Not authorized"
    assert _connect(port, "no-such-gateway", a_credentials.password) == "Not authorized"
    assert _connect(port, service.username, "wrong-password") == "Not authorized"
    assert _connect(port, service.username, service.password, "meterhub-test-ingest") == "Success"
    assert _connect(port, a_credentials.username, a_credentials.password) == "Success"


def _assert_topic_rules_end_to_end(app, url: str, redis_url: str, port: int, service: Credentials,
                                   a, a_credentials: Credentials, b, b_credentials: Credentials, *,
                                   suback_refused: bool) -> None:
    """A cannot write into B's topic nor read B's readings; each gateway's own readings are stored.

    amqtt refuses the subscription itself; Mosquitto grants it and then delivers nothing the ACL forbids."""
    ingest = RunningWorker(app, with_credentials(url, service), redis_url)
    intruder = Gateway_(port, a_credentials)
    try:
        for pattern in ("meterhub/+/readings", "#", f"meterhub/{b.client_id}/#"):
            assert intruder.subscribe(pattern) is not suback_refused, pattern
        assert intruder.subscribe(f"meterhub/{a.client_id}/commands")
        # the finding; Mosquitto also drops the connection of a client that tries it
        intruder.publish(f"meterhub/{b.client_id}/readings", _reading(1, "123456.78"), timeout=3)
    finally:
        intruder.close()
    gateway_a, gateway_b = Gateway_(port, a_credentials), Gateway_(port, b_credentials)
    try:
        gateway_a.subscribe("meterhub/+/readings")  # granted by Mosquitto only: B's readings must not come
        gateway_a.publish(f"meterhub/{a.client_id}/readings", _reading(2, "42.5"))
        gateway_b.publish(f"meterhub/{b.client_id}/readings", _reading(1, "7"))
        ingest.wait_acked(2)
        time.sleep(0.5)  # anything else in flight would have arrived by now
        assert ingest.worker.stats["acked"] == 2
        assert _stored(app, b.meter_ids[0]) == [Decimal("7")]
        assert _stored(app, a.meter_ids[0]) == [Decimal("42.5")]
        assert set(gateway_a.received) <= {f"meterhub/{a.client_id}/readings"}  # at most its own, never B's
        gateway_a.close()
        # a will is a publish too: amqtt refuses the CONNECT, Mosquitto never publishes it
        for will_topic in (f"meterhub/{b.client_id}/readings", f"meterhub/{a.client_id}/+"):
            code = _connect_with_will(port, a_credentials, will_topic, json.dumps(_reading(5, "654321")).encode())
            assert code == 5 if suback_refused else code in (0, 5, -1), (will_topic, code)  # -1: closed
        time.sleep(0.5)
        assert ingest.worker.stats["acked"] == 2 and _stored(app, b.meter_ids[0]) == [Decimal("7")]
    finally:
        gateway_a.close()
        gateway_b.close()
        ingest.stop()


@pytest.mark.embedded
def test_embedded_broker_refuses_anonymous_and_wrong_passwords(app, amqtt, two_gateways):
    _, port, service = amqtt
    (a, a_credentials), (b, _) = two_gateways
    _assert_sign_in_rules(app, port, service, a, a_credentials)
    # a gateway's client id is its user name: it cannot take another client's session
    assert _connect(port, a_credentials.username, a_credentials.password, b.client_id) == "Not authorized"
    assert _connect(port, a_credentials.username, a_credentials.password, "meterhub-ingest") == "Not authorized"
    # a new password replaces the old one at once; a disabled gateway is refused
    renewed = _issue(app, a.gateway_id)
    assert _connect(port, a_credentials.username, a_credentials.password) == "Not authorized"
    assert _connect(port, renewed.username, renewed.password) == "Success"
    with app.app_context(), service_session() as s:
        s.execute(text("UPDATE gateways SET enabled = false WHERE id = :g"), {"g": a.gateway_id})
    assert _connect(port, renewed.username, renewed.password) == "Not authorized"


@pytest.mark.embedded
def test_a_gateway_without_a_password_cannot_sign_in(app, amqtt, group):
    _, port, _ = amqtt
    fleet = make_fleet(app, group)  # created before passwords existed: no hash
    assert _connect(port, fleet.client_id, "") == "Not authorized"
    assert _connect(port, fleet.client_id, "anything") == "Not authorized"


@pytest.mark.embedded
def test_embedded_broker_keeps_each_gateway_to_its_own_topic(app, amqtt, two_gateways, service_urls):
    svc, port, service = amqtt
    (a, a_credentials), (b, b_credentials) = two_gateways
    _assert_topic_rules_end_to_end(app, svc.url, service_urls["redis"], port, service, a, a_credentials, b,
                                   b_credentials, suback_refused=True)
    # the ingest's service user reads but never writes
    ingest = RunningWorker(app, with_credentials(svc.url, service), service_urls["redis"])
    writer = Gateway_(port, service, "meterhub-test-writer")
    try:
        writer.publish(f"meterhub/{a.client_id}/readings", _reading(3, "999"))
        time.sleep(0.5)
        assert ingest.worker.stats["acked"] == 0
    finally:
        writer.close()
        ingest.stop()
    assert _stored(app, a.meter_ids[0]) == [Decimal("42.5")]


@pytest.mark.embedded
def test_an_unauthenticated_client_cannot_take_over_the_ingests_session(app, amqtt, two_gateways, service_urls):
    svc, port, service = amqtt
    (a, a_credentials), _ = two_gateways
    ingest = RunningWorker(app, with_credentials(svc.url, service), service_urls["redis"])
    connects: list[int] = []
    original = ingest.worker.client.on_connect
    ingest.worker.client.on_connect = lambda *args: (connects.append(1), original(*args))
    try:
        client_id = ingest.worker.settings.client_id
        for clean in (False, True):  # amqtt alone took over / deleted the session before asking the plugins
            intruder = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
            intruder.connect("127.0.0.1", port)
            intruder.loop_start()
            time.sleep(0.5)
            intruder.loop_stop()
        assert _connect(port, a_credentials.username, "wrong", client_id) == "Not authorized"
        time.sleep(1.5)  # a dropped ingest would have reconnected by now
        assert connects == [] and ingest.worker.connected.is_set()
        gateway_a = Gateway_(port, a_credentials)
        gateway_a.publish(f"meterhub/{a.client_id}/readings", _reading(9, "5"))
        gateway_a.close()
        ingest.wait_acked(1)
    finally:
        ingest.stop()


def test_passwords_are_mosquitto_compatible():
    hashed = hash_password("s3cret")
    assert re.fullmatch(r"\$7\$\d+\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==", hashed)
    assert verify_password("s3cret", hashed) and not verify_password("s3cre", hashed)
    for bad in ("", "$7$", "$7$x$y$z", "$6$abc$def", "$7$0$AAAA$AAAA", "$7$99999999$AAAA$AAAA"):
        assert not verify_password("s3cret", bad)
    tool = shutil.which("mosquitto_passwd")
    if tool:  # and a hash written by Mosquitto's own tool verifies here
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "passwd"
            subprocess.run([tool, "-c", "-b", str(path), "alice", "s3cret"], check=True, capture_output=True)
            their_hash = path.read_text().strip().split(":", 1)[1]
        assert verify_password("s3cret", their_hash) and not verify_password("other", their_hash)


@pytest.mark.skipif(not shutil.which("mosquitto") and not shutil.os.path.exists("/usr/sbin/mosquitto"),
                    reason="Mosquitto is not installed (apt-get install mosquitto)")
def test_generated_files_work_with_a_real_mosquitto(app, runner, tmp_path, two_gateways, service_urls):
    (a, a_credentials), (b, b_credentials) = two_gateways
    broker = Mosquitto(tmp_path / "mosquitto", auth=True)
    service = Credentials("meterhub-ingest", "test-service-password")
    app.config["MQTT_URL"] = with_credentials(broker.url, service)
    result = runner.invoke(args=["mqtt", "export-auth", "--passwd", str(broker.passwd), "--acl", str(broker.acl)])
    assert result.exit_code == 0, result.output
    lines = [line for line in broker.passwd.read_text().splitlines() if not line.startswith("#")]
    users = dict(line.split(":", 1) for line in lines)
    assert set(users) >= {"meterhub-ingest", a.client_id, b.client_id}
    assert all(h.startswith("$7$") for h in users.values())
    assert a_credentials.password not in broker.passwd.read_text()
    assert (broker.passwd.stat().st_mode & 0o077) == 0
    assert "pattern readwrite meterhub/%u/#" in broker.acl.read_text()
    broker.start()
    try:
        _assert_sign_in_rules(app, broker.port, service, a, a_credentials)
        _assert_topic_rules_end_to_end(app, broker.url, service_urls["redis"], broker.port, service, a,
                                       a_credentials, b, b_credentials, suback_refused=False)
    finally:
        broker.cleanup()


def test_console_shows_a_new_gateway_password_once_and_stores_its_hash(app, client, group, other_group, operator):
    operator("group_admin", all_properties=True)
    token = csrf_token(client, "/gateways")
    form = {"csrf_token": token, "property_id": group.property_id, "name": "DTU 7", "framing": "mqtt",
            "mqtt_client_id": f"dtu-{group.marker}"}
    response = client.post("/gateways", data=form)
    assert response.status_code == 201 and response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    password = re.search(r"<code>([A-Za-z0-9_-]{32})</code>", page).group(1)
    assert "<svg" in page  # the one-time label (a QR of the sign-in) to print for the gateway
    with app.app_context(), service_session() as s:
        gateway = s.execute(select(Gateway).where(Gateway.mqtt_client_id == form["mqtt_client_id"])).scalar_one()
        stored_hash = gateway.mqtt_password_hash
        row = s.execute(text("SELECT row_to_json(g)::text FROM gateways g WHERE id = :g"), {"g": gateway.id}).scalar()
    assert verify_password(password, stored_hash) and password not in row
    shown_again = client.get(f"/gateways/{gateway.id}").get_data(as_text=True)
    assert password not in shown_again and "Issue a new password" in shown_again
    renewed = client.post(f"/gateways/{gateway.id}/mqtt-password", data={"csrf_token": token})
    new_password = re.search(r"<code>([A-Za-z0-9_-]{32})</code>", renewed.get_data(as_text=True)).group(1)
    with app.app_context(), service_session() as s:
        stored_hash = s.get(Gateway, gateway.id).mqtt_password_hash
    assert verify_password(new_password, stored_hash) and not verify_password(password, stored_hash)

    # client ids that cannot be a broker user name and a topic level, a reserved one, or one taken by another group
    taken = make_fleet(app, other_group).client_id
    for bad in ("a/b", "#", "x+y", "has space", "meterhub-ingest", taken):
        answer = client.post("/gateways", data={**form, "name": f"DTU {bad}", "mqtt_client_id": bad},
                             follow_redirects=True)
        assert answer.status_code == 400, bad  # the form again, the message beside the client id field
        feedback = re.search(r'id="[^"]*mqtt_client_id[^"]*-error"[^>]*>([^<]*)<', answer.get_data(as_text=True))
        assert feedback and "MQTT client id" in feedback.group(1), bad
    with app.app_context(), service_session() as s:
        assert s.execute(text("SELECT count(*) FROM gateways WHERE group_id = :g AND framing = 'mqtt'"),
                         {"g": group.group_id}).scalar() == 1


def test_excel_import_shows_each_new_mqtt_gateways_password_once(app, client, group, operator):
    from tests.test_onboarding import _workbook

    operator("group_admin", all_properties=True)
    client_ids = [f"xl-{group.marker}-{i}" for i in (1, 2)]
    data = _workbook([["P1", f"XL DTU {i}", "", "", "mqtt", "", "", cid] for i, cid in enumerate(client_ids, 1)]
                     + [["P1", "XL bus", "192.168.1.60", 502, "modbus-rtu-over-tcp", 9600, "E", ""]], [])

    response = client.post("/devices/import", data={"csrf_token": csrf_token(client, "/devices/import"),
                                                    "file": (io.BytesIO(data), "gateways.xlsx")},
                           content_type="multipart/form-data")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    shown = dict(re.findall(r"<code[^>]*>([A-Za-z0-9._-]+)</code></td><td><code[^>]*>([A-Za-z0-9_-]{32})</code>", page))
    assert set(shown) == set(client_ids)
    with app.app_context(), service_session() as s:
        hashes = dict(s.execute(select(Gateway.mqtt_client_id, Gateway.mqtt_password_hash)
                                .where(Gateway.mqtt_client_id.in_(client_ids))).all())
    assert all(verify_password(shown[cid], hashes[cid]) for cid in client_ids)
    assert not any(p in client.get("/gateways").get_data(as_text=True) for p in shown.values())


def test_ingest_takes_from_a_gateways_topic_only_that_gateways_meters(app, group, other_group):
    """Defence in depth behind the broker: the topic names the gateway, and only its own meters are looked up."""
    from meterhub.db import service_engine
    from meterhub.mqtt_ingest.payload import parse
    from meterhub.mqtt_ingest.store import GatewayDirectory, store_messages

    a = make_fleet(app, other_group)  # address 1
    b = make_fleet(app, group, devices=2)  # addresses 1 and 2
    message = parse(f"meterhub/{a.client_id}/readings", json.dumps({"seq": 1, "readings": [
        {"address": "2", "ts": (NOW - timedelta(minutes=1)).isoformat(), "values": {"energy_kwh": "123456.78"}},
        {"address": "1", "ts": (NOW - timedelta(minutes=1)).isoformat(), "values": {"energy_kwh": "3"}},
    ]}).encode())
    with app.app_context():
        engine = service_engine()
        outcome = store_messages(engine, GatewayDirectory(engine), [message])
    assert (outcome.unknown_meters, outcome.readings.stored) == (1, 1)
    assert _stored(app, a.meter_ids[0]) == [Decimal("3")]
    assert all(_stored(app, meter) == [] for meter in b.meter_ids)
