"""A private Mosquitto broker (restartable) and an in-process MQTT ingest worker."""

from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
import redis
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import Mosquitto
from meterhub.db import service_engine
from meterhub.mqtt_ingest.worker import MqttIngestWorker, Settings


@pytest.fixture()
def broker(tmp_path):
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.cleanup()


class RunningWorker:
    def __init__(self, app, broker, redis_url: str) -> None:
        self.redis = redis.Redis.from_url(redis_url)
        self.key = f"meterhub-test:{uuid.uuid4().hex[:8]}:mqtt:rejected"
        with app.app_context():
            engine = service_engine()
        settings = Settings(broker.url, client_id=f"ingest-{uuid.uuid4().hex[:8]}", batch_ms=20)
        self.worker = MqttIngestWorker(settings, engine, self.redis, self.key, notify=False)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()
        assert self.worker.connected.wait(10), "ingest worker did not connect"

    def wait_acked(self, count: int, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while self.worker.stats["acked"] < count:
            assert time.monotonic() < deadline, f"only {self.worker.stats['acked']} of {count} acked"
            time.sleep(0.02)

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(10)
        self.redis.delete(self.key)


@pytest.fixture()
def ingest_worker(app, broker, service_urls):
    running = RunningWorker(app, broker, service_urls["redis"])
    yield running
    running.stop()


def publisher(broker, client_id: str | None = None) -> mqtt.Client:
    """A QoS 1 publisher with a persistent session (it re-sends unacknowledged messages after a reconnect)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}",
                         clean_session=False)
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(min_delay=1, max_delay=2)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client
