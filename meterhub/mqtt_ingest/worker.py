"""The MQTT ingest worker: QoS 1, persistent session, acknowledge only after the database commit.

The paho network thread only queues messages. The worker thread takes up to ``batch_size`` messages (or what
arrived within ``batch_ms``), stores them in one transaction and then acknowledges each one. If the process
dies before the commit, nothing was acknowledged and the broker redelivers the messages to the same
persistent session (same client id, clean session off); if it dies between commit and acknowledgement,
the redelivered messages are recognised by (gateway, seq) and not stored twice. Invalid payloads are logged,
counted in Redis (``<namespace>:mqtt:rejected``, a hash by reason) and acknowledged, so the broker does not
redeliver them forever. A database outage only delays: the batch is retried until it is stored.

Several workers split the gateways' messages with an MQTT shared subscription (``shared``:
``$share/<share_group>/meterhub/+/readings``; each worker needs its own client id). The broker hands each
message to one member of the group; a worker killed with unacknowledged messages gets them again when it
reconnects with its client id (its persistent session keeps them), and the (gateway, seq) check drops the
ones it had committed. Mosquitto delivers ``$share``; the embedded amqtt broker does not, so there a single
worker without ``shared`` stays the default (docs/mqtt_payload.md, "Several ingest processes").
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.engine import Engine

from meterhub.timeseries.ingest import notify_stored

from .payload import TOPIC_PREFIX, TOPIC_SUFFIX, InvalidPayload, Message, parse
from .store import GatewayDirectory, store_messages

log = logging.getLogger(__name__)

DEFAULT_CLIENT_ID = "meterhub-ingest"
SHARE_GROUP = "meterhub"


@dataclass
class Settings:
    """Worker settings (``mqtt_url``: ``mqtt://[user:password@]host:port``)."""

    mqtt_url: str
    client_id: str = DEFAULT_CLIENT_ID
    shared: bool = False
    batch_size: int = 500
    batch_ms: int = 50
    keepalive: int = 30
    share_group: str = SHARE_GROUP

    @property
    def topic(self) -> str:
        """The subscription: every gateway's readings topic, optionally as a shared subscription."""
        topic = f"{TOPIC_PREFIX}/+/{TOPIC_SUFFIX}"
        return f"$share/{self.share_group}/{topic}" if self.shared else topic


class MqttIngestWorker:
    """Subscribe, store, acknowledge. ``run()`` blocks until ``stop()``; ``stats`` counts what happened."""

    def __init__(self, settings: Settings, engine: Engine, redis: Any = None, redis_key: str = "meterhub:mqtt:rejected",
                 notify: bool = True) -> None:
        self.settings = settings
        self.engine = engine
        self.redis = redis
        self.redis_key = redis_key
        self.notify = notify
        self.directory = GatewayDirectory(engine)
        self.stats: Counter[str] = Counter()
        self._queue: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=settings.client_id, clean_session=False,
                                  protocol=mqtt.MQTTv311, manual_ack=True)
        url = urlparse(settings.mqtt_url)
        if url.username:
            self.client.username_pw_set(unquote(url.username), unquote(url.password or ""))
        self._host, self._port = url.hostname or "127.0.0.1", url.port or 1883
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    # --- paho callbacks (network thread) -------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("MQTT connection refused: %s", reason)
            return
        log.info("MQTT connected (session present: %s); subscribing to %s", flags.session_present,
                 self.settings.topic)
        client.subscribe(self.settings.topic, qos=1)
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("MQTT disconnected (%s); reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._queue.put(message)

    # --- worker thread -------------------------------------------------------------------------------
    def _take_batch(self) -> list[mqtt.MQTTMessage]:
        try:
            batch = [self._queue.get(timeout=0.2)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.settings.batch_ms / 1000
        while len(batch) < self.settings.batch_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=max(remaining, 0)) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _reject(self, raw: mqtt.MQTTMessage, err: InvalidPayload) -> None:
        self.stats["rejected"] += 1
        self.stats[f"rejected:{err.reason}"] += 1
        log.warning("rejected MQTT message on %s (mid %s): %s", raw.topic, raw.mid, err)
        if self.redis is not None:
            try:
                self.redis.hincrby(self.redis_key, err.reason, 1)
            except Exception:
                log.exception("could not count the rejected message in Redis")

    def process(self, batch: list[mqtt.MQTTMessage]) -> None:
        """Parse, store (retrying until the database takes it), then acknowledge every message of ``batch``."""
        parsed: list[tuple[mqtt.MQTTMessage, Message]] = []
        for raw in batch:
            try:
                parsed.append((raw, parse(raw.topic, raw.payload)))
            except InvalidPayload as err:
                self._reject(raw, err)
        if parsed:
            while True:
                try:
                    outcome = store_messages(self.engine, self.directory, [m for _, m in parsed])
                    break
                except Exception:
                    if self._stop.is_set():
                        raise
                    log.exception("storing %d MQTT messages failed; retrying (they stay unacknowledged)",
                                  len(parsed))
                    time.sleep(2)
            rejected_ids = {id(m) for m, _ in outcome.rejected}
            for raw, message in parsed:
                if id(message) in rejected_ids:
                    self._reject(raw, next(e for m, e in outcome.rejected if m is message))
            self.stats["stored_messages"] += outcome.stored_messages
            self.stats["duplicate_messages"] += outcome.duplicate_messages
            self.stats["readings"] += outcome.readings.stored
            self.stats["unknown_meters"] += outcome.unknown_meters
            if self.notify:
                notify_stored(outcome.readings.meter_ids_by_group)
        for raw in batch:  # only now, after the commit
            self.client.ack(raw.mid, raw.qos)
        self.stats["acked"] += len(batch)

    def run(self) -> None:
        """Connect and process until :meth:`stop` is called."""
        self.client.connect_async(self._host, self._port, keepalive=self.settings.keepalive)
        self.client.loop_start()
        try:
            while not self._stop.is_set():
                batch = self._take_batch()
                if batch:
                    self.process(batch)
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            log.info("MQTT ingest stopped: %s", dict(self.stats))

    def stop(self) -> None:
        """Ask :meth:`run` to finish after the current batch (unprocessed messages stay unacknowledged)."""
        self._stop.set()
