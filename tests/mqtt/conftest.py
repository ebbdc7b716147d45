"""A private Mosquitto broker (restartable) that signs users in from meterhub's generated password file and ACL,
and an in-process MQTT ingest worker signed in as the service user."""

from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
import redis
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import Mosquitto
from meterhub.db import service_engine, service_session
from meterhub.devices.models import Gateway
from meterhub.mqtt_auth.credentials import Credentials, issue_gateway_password, with_credentials
from meterhub.mqtt_auth.export import export_auth
from meterhub.mqtt_auth.passwords import new_password
from meterhub.mqtt_auth.rules import SERVICE_USER
from meterhub.mqtt_ingest.worker import MqttIngestWorker, Settings


class AuthMosquitto(Mosquitto):
    """Mosquitto with ``allow_anonymous false`` and the files of ``meterhub mqtt export-auth``."""

    def __init__(self, app, workdir) -> None:
        super().__init__(workdir, auth=True)
        self.app = app
        self.service = Credentials(SERVICE_USER, new_password())
        self.export()

    def export(self) -> None:
        """Write the password file and ACL from the database (and make a running broker re-read them)."""
        with self.app.app_context(), service_session() as s:
            export_auth(s, [self.service], self.passwd, self.acl)
        self.reload()

    def gateway(self, gateway_id: int) -> Credentials:
        """Issue a password to the gateway (as onboarding does) and let the broker know it."""
        with self.app.app_context(), service_session() as s:
            credentials = issue_gateway_password(s.get(Gateway, gateway_id))
        self.export()
        return credentials

    @property
    def ingest_url(self) -> str:
        return with_credentials(self.url, self.service)


@pytest.fixture()
def broker(app, tmp_path):
    broker = AuthMosquitto(app, tmp_path / "mosquitto").start()
    yield broker
    broker.cleanup()


class RunningWorker:
    def __init__(self, app, url: str, redis_url: str) -> None:
        self.redis = redis.Redis.from_url(redis_url)
        self.key = f"meterhub-test:{uuid.uuid4().hex[:8]}:mqtt:rejected"
        with app.app_context():
            engine = service_engine()
        settings = Settings(url, client_id=f"ingest-{uuid.uuid4().hex[:8]}", batch_ms=20)
        self.worker = MqttIngestWorker(settings, engine, self.redis, self.key, notify=False)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()
        assert self.worker.connected.wait(10), "ingest worker did not connect"

    def wait_acked(self, count: int, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while self.worker.stats["acked"] < count:
            assert time.monotonic() < deadline, f"only {self.worker.stats['acked']} of {count} acked"
            time.sleep(0.02)

    def wait_stored(self, count: int, timeout: float = 30) -> None:
        """Wait until ``count`` distinct messages are stored (``acked`` also counts redeliveries)."""
        deadline = time.monotonic() + timeout
        while self.worker.stats["stored_messages"] < count:
            assert time.monotonic() < deadline, f"only {self.worker.stats['stored_messages']} of {count} stored"
            time.sleep(0.02)

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(10)
        self.redis.delete(self.key)
        self.redis.close()
        release(self.worker.client)


def release(client: mqtt.Client) -> None:
    """Drop a stopped client's callbacks: no reference cycle is left, so the client (and the socket pair paho
    closes only when the client is deleted) goes at once, not at an arbitrary garbage collection."""
    for name in ("on_connect", "on_disconnect", "on_message", "on_subscribe", "on_publish"):
        setattr(client, name, None)


@pytest.fixture()
def ingest_worker(app, broker, service_urls):
    running = RunningWorker(app, broker.ingest_url, service_urls["redis"])
    yield running
    running.stop()


def publisher(broker, credentials: Credentials, client_id: str | None = None) -> mqtt.Client:
    """A QoS 1 publisher signed in as ``credentials`` with a persistent session (it re-sends unacknowledged
    messages after a reconnect); returns once the broker accepted it."""
    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or credentials.username,
                         clean_session=False)
    client.username_pw_set(credentials.username, credentials.password)
    client.on_connect = lambda c, u, flags, reason, props: None if reason.is_failure else connected.set()
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(min_delay=1, max_delay=2)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    assert connected.wait(10), f"{credentials.username} could not sign in to the broker"
    return client
