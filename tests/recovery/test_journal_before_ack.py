"""A reading the embedded broker acknowledged (PUBACK) is in its journal already: a kill -9 right after the
acknowledgement cannot lose it. The broker is frozen (SIGSTOP) the moment the gateway sees each PUBACK, and the
journal file is read while it is frozen (amqtt sends PUBACK before it routes the message, and the journal used
to be written when the message was routed)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from meterhub.services.mqtt import start_embedded_mqtt
from tests.recovery.test_broker_restart import _issue, _reading
from tests.timeseries.factories import make_fleet

MESSAGES = 30


@pytest.mark.embedded
def test_every_acknowledged_reading_is_journaled_before_its_puback(app, group, tmp_path):
    instance = tmp_path / "instance"
    broker = start_embedded_mqtt(instance, port=0, auth_database_url=app.config["SERVICE_DATABASE_URL"])
    port = int(broker.url.rsplit(":", 1)[1])
    fleet = make_fleet(app, group)
    credentials = _issue(app, fleet.gateway_id)
    journal = instance / "mqtt" / "journal.sqlite3"
    missing: list[int] = []
    acked = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=credentials.username)
    client.username_pw_set(credentials.username, credentials.password)
    seq_of: dict[int, int] = {}

    def on_publish(c, userdata, mid, reason, properties) -> None:
        os.kill(broker.pid, signal.SIGSTOP)  # frozen before it can do anything after the PUBACK
        try:
            with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as db:
                seqs = {json.loads(data)["seq"] for (data,) in db.execute("SELECT data FROM journal")}
            if seq_of[mid] not in seqs:
                missing.append(seq_of[mid])
        finally:
            os.kill(broker.pid, signal.SIGCONT)
            acked.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for seq in range(1, MESSAGES + 1):
            acked.clear()
            info = client.publish(f"meterhub/{fleet.client_id}/readings", json.dumps(_reading(seq)).encode(), qos=1)
            seq_of[info.mid] = seq
            assert acked.wait(10), f"reading {seq} was not acknowledged"
        assert missing == [], f"acknowledged but not journaled when acknowledged: {missing}"
    finally:
        client.disconnect()
        client.loop_stop()
        os.kill(broker.pid, signal.SIGCONT)
        broker.stop()
