"""Three ``meterhub mqtt-ingest --shared`` processes split the gateways' messages through a Mosquitto shared
subscription; one is killed with SIGKILL mid-stream and started again by its supervisor (same client id):
no message is lost, none is stored twice (ack after commit, dedupe on (gateway, seq))."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import text

from meterhub.db import service_session
from tests.timeseries.factories import make_fleet

from .conftest import publisher
from .test_mqtt_ingest import payload

ROOT = Path(__file__).resolve().parents[2]


class IngestProcess:
    """``meterhub mqtt-ingest --shared --client-id <id>`` in its own process group, logging to a file."""

    def __init__(self, app, url: str, client_id: str, log_path: Path) -> None:
        self.client_id, self.log_path = client_id, log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("METERHUB_")}
        settings = {"DATABASE_URL": app.config["DATABASE_URL"], "REDIS_URL": app.config["REDIS_URL"],
                    "REDIS_NAMESPACE": app.config["REDIS_NAMESPACE"], "MQTT_URL": app.config["MQTT_URL"],
                    "INSTANCE_PATH": app.instance_path}
        env.update({f"METERHUB_{k}": str(v) for k, v in settings.items()})
        self.args = [sys.executable, "-m", "meterhub", "mqtt-ingest", "--url", url, "--shared",
                     "--share-group", "ingest-test", "--client-id", client_id, "--batch-ms", "20",
                     "--batch-size", "50"]
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> IngestProcess:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=ROOT)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stored(self) -> int:
        """Messages this process stored, from its final stats line (after a graceful stop)."""
        found = re.findall(r"'stored_messages': (\d+)", self.log())
        return int(found[-1]) if found else 0


def _counts(app, gateway_ids: list[int]) -> tuple[int, int, int, int]:
    """(sequence rows, distinct (gateway, seq), readings, distinct (meter, ts)) of these gateways."""
    with app.app_context(), service_session() as s:
        seqs = s.execute(text("SELECT count(*), count(DISTINCT (gateway_id, seq)) FROM mqtt_sequences "
                              "WHERE gateway_id = ANY(:g)"), {"g": gateway_ids}).one()
        readings = s.execute(text(
            "SELECT count(*), count(DISTINCT (r.meter_id, r.ts)) FROM readings r JOIN meters m ON m.id = r.meter_id "
            "JOIN devices d ON d.id = m.device_id WHERE d.gateway_id = ANY(:g)"), {"g": gateway_ids}).one()
    return seqs[0], seqs[1], readings[0], readings[1]


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_three_shared_ingests_one_killed_lose_nothing_and_store_nothing_twice(app, group, broker, tmp_path):
    fleets = [make_fleet(app, group, devices=2) for _ in range(3)]
    gateway_ids = [f.gateway_id for f in fleets]
    workers = [IngestProcess(app, broker.ingest_url, f"ingest-{i}", tmp_path / f"ingest-{i}.log").start()
               for i in range(3)]
    pubs = [publisher(broker, broker.gateway(f.gateway_id)) for f in fleets]
    per_gateway = 400
    total = per_gateway * len(fleets)
    try:
        _wait(lambda: all("subscribing to $share/ingest-test/" in w.log() for w in workers), 60,
              "three ingest processes subscribed")
        infos = []
        victim = workers[1]
        for seq in range(per_gateway):
            for fleet, pub in zip(fleets, pubs):
                infos.append(pub.publish(f"meterhub/{fleet.client_id}/readings",
                                         payload(seq, str(seq), str(seq % 2 + 1)), qos=1))
            if seq == per_gateway // 3:  # mid-stream: some stored, more in flight and to come
                _wait(lambda: _counts(app, gateway_ids)[1] > 0, 30, "the first messages stored")
                victim.kill()
            if seq % 50 == 49:
                time.sleep(0.05)  # a stream, not one burst
        for info in infos:
            info.wait_for_publish(60)
        before_restart = _counts(app, gateway_ids)[1]
        victim.start()  # its supervisor restarts it: same client id, same persistent session
        _wait(lambda: _counts(app, gateway_ids)[1] >= total, 120, f"{total} messages stored")
        time.sleep(1.0)  # redeliveries still on their way would show up as duplicates now
        rows, distinct, readings, distinct_readings = _counts(app, gateway_ids)
    finally:
        for pub in pubs:
            pub.disconnect()
            pub.loop_stop()
        for worker in workers:
            worker.stop()
    assert distinct == total, f"lost {total - distinct} of {total} messages"
    assert rows == distinct, f"{rows - distinct} messages stored twice"
    assert readings == distinct_readings == total, (readings, distinct_readings, total)
    survivors = [w.stored() for w in (workers[0], workers[2])]
    assert all(n > 0 for n in survivors), f"the shared subscription did not split the messages: {survivors}"
    print(f"stored by the survivors: {survivors}; before the victim's restart {before_restart}/{total}")
