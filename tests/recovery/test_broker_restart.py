"""Finding 6 of issue 22: readings the embedded broker acknowledged to a gateway survive its kill -9.

The ingest (persistent session) is down while a gateway publishes 12 QoS 1 readings: the broker acknowledges
them and holds them for the ingest's session, in memory. The broker is killed and started again on the same
port (amqtt, as ``make run`` starts it: auth and topic plugins, and the message journal); when the ingest comes
back and subscribes, all 12 are delivered and stored once (was: lost, ``session present: False``).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import paho.mqtt.client as mqtt
import pytest
import redis
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import text

from meterhub.db import service_engine, service_session
from meterhub.devices.models import Gateway
from meterhub.mqtt_auth.credentials import Credentials, issue_gateway_password, service_credentials, with_credentials
from meterhub.mqtt_ingest.worker import MqttIngestWorker, Settings
from meterhub.services.mqtt import start_embedded_mqtt
from tests.recovery.conftest import wait_for
from tests.timeseries.factories import make_fleet

MESSAGES = 12
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def _issue(app, gateway_id: int) -> Credentials:
    with app.app_context(), service_session() as s:
        return issue_gateway_password(s.get(Gateway, gateway_id))


class Publisher:
    """A gateway signed in with its own password, publishing QoS 1 (each publish waits for the PUBACK)."""

    def __init__(self, port: int, credentials: Credentials) -> None:
        connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=credentials.username)
        self.client.username_pw_set(credentials.username, credentials.password)
        self.client.on_connect = lambda c, u, f, reason, p: None if reason.is_failure else connected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert connected.wait(10), f"{credentials.username} could not sign in"

    def publish(self, topic: str, payload: dict) -> None:
        self.client.publish(topic, json.dumps(payload).encode(), qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Ingest:
    """The MQTT ingest with a fixed client id (its persistent session), in a thread."""

    def __init__(self, app, url: str, redis_url: str, client_id: str) -> None:
        self.redis = redis.Redis.from_url(redis_url)
        with app.app_context():
            engine = service_engine()
        self.worker = MqttIngestWorker(Settings(url, client_id=client_id, batch_ms=20), engine, self.redis,
                                       f"meterhub-test:{uuid.uuid4().hex[:8]}:mqtt:rejected", notify=False)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()
        assert self.worker.connected.wait(15), "the ingest did not connect"

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(10)


def _reading(seq: int) -> dict:
    return {"seq": seq, "ts": (NOW - timedelta(minutes=30) + timedelta(seconds=seq)).isoformat(),
            "readings": [{"address": "1", "values": {"energy_kwh": str(100 + seq)}}]}


@pytest.mark.embedded
def test_readings_acknowledged_before_a_broker_kill_are_delivered_after_its_restart(app, group, tmp_path,
                                                                                     service_urls):
    instance = tmp_path / "instance"
    auth_url = app.config["SERVICE_DATABASE_URL"]
    broker = start_embedded_mqtt(instance, port=0, auth_database_url=auth_url)
    port = int(broker.url.rsplit(":", 1)[1])
    ingest_url = with_credentials(broker.url, service_credentials(instance))
    fleet = make_fleet(app, group)
    client_id = f"meterhub-ingest-{uuid.uuid4().hex[:6]}"
    restarted = None
    try:
        first = Ingest(app, ingest_url, service_urls["redis"], client_id)  # its session and subscription exist
        first.stop()  # the ingest is restarting: the broker keeps its session and queues for it
        gateway = Publisher(port, _issue(app, fleet.gateway_id))
        for seq in range(1, MESSAGES + 1):
            gateway.publish(f"meterhub/{fleet.client_id}/readings", _reading(seq))  # PUBACK received
        gateway.close()
        time.sleep(0.5)
        os.kill(broker.pid, signal.SIGKILL)
        os.waitpid(broker.pid, 0)  # reaped: no zombie holding its pid file
        restarted = start_embedded_mqtt(instance, port=port, auth_database_url=auth_url)
        second = Ingest(app, ingest_url, service_urls["redis"], client_id)
        try:
            wait_for(lambda: _stored(app, fleet.meter_ids[0]) >= MESSAGES, 30, "the 12 readings are stored")
            time.sleep(0.5)
        finally:
            second.stop()
        assert _stored(app, fleet.meter_ids[0]) == MESSAGES  # each once
    finally:
        for service in (restarted, broker):
            if service is not None:
                service.stop()


def _stored(app, meter_id: int) -> int:
    with app.app_context(), service_session() as s:
        return s.execute(text("SELECT count(*) FROM readings WHERE meter_id = :m"), {"m": meter_id}).scalar()


@pytest.mark.embedded
def test_readings_published_after_a_broker_restart_before_the_ingest_is_back_are_delivered(app, group, tmp_path,
                                                                                          service_urls):
    """After a kill -9 the ingest's persistent session is gone, and a gateway that reconnects sooner than the ingest
    publishes into a broker where nobody is subscribed yet: those readings are acknowledged, journaled, and
    delivered when the ingest subscribes (the chaos suite's broker restart lost them when the ingest's reconnect
    backoff was longer than the gateway's)."""
    instance = tmp_path / "instance"
    auth_url = app.config["SERVICE_DATABASE_URL"]
    broker = start_embedded_mqtt(instance, port=0, auth_database_url=auth_url)
    port = int(broker.url.rsplit(":", 1)[1])
    ingest_url = with_credentials(broker.url, service_credentials(instance))
    fleet = make_fleet(app, group)
    client_id = f"meterhub-ingest-{uuid.uuid4().hex[:6]}"
    credentials = _issue(app, fleet.gateway_id)
    restarted = None
    try:
        first = Ingest(app, ingest_url, service_urls["redis"], client_id)
        first.stop()
        os.kill(broker.pid, signal.SIGKILL)
        os.waitpid(broker.pid, 0)
        restarted = start_embedded_mqtt(instance, port=port, auth_database_url=auth_url)
        gateway = Publisher(port, credentials)  # back first: the ingest has no session on this broker yet
        for seq in range(1, MESSAGES + 1):
            gateway.publish(f"meterhub/{fleet.client_id}/readings", _reading(seq))
        second = Ingest(app, ingest_url, service_urls["redis"], client_id)
        try:
            gateway.publish(f"meterhub/{fleet.client_id}/readings", _reading(MESSAGES + 1))  # after: routed
            wait_for(lambda: _stored(app, fleet.meter_ids[0]) >= MESSAGES + 1, 30, "the 13 readings are stored")
            time.sleep(0.5)
        finally:
            second.stop()
            gateway.close()
        assert _stored(app, fleet.meter_ids[0]) == MESSAGES + 1  # each once
    finally:
        for service in (restarted, broker):
            if service is not None:
                service.stop()
