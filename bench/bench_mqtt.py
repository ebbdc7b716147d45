"""MQTT ingest benchmark: QoS 1 messages/s with ack after commit, and 0 lost / 0 duplicated across a
``kill -9`` of the ingest process and a broker restart.

    python -m bench.bench_mqtt [--messages 20000] [--per-message 5] [--gateways 10]

Uses a throwaway database and a private Mosquitto (persistence in a temp dir, unlimited queues) that signs users
in from the files ``meterhub mqtt export-auth`` writes: each gateway publishes as itself, the ingest as the
service user. The ingest worker runs as a separate process (``python -m bench.bench_mqtt --worker ...``) so it
can be killed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from meterhub.mqtt_auth.credentials import Credentials, with_credentials
from meterhub.mqtt_auth.export import passwd_text, write_private
from meterhub.mqtt_auth.passwords import hash_password, new_password
from meterhub.mqtt_auth.rules import SERVICE_USER, mosquitto_acl

from .bench_ingest import make_fleet
from .common import Mosquitto, print_table, service_url, throwaway_database, write_results

log = logging.getLogger("bench.mqtt")
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
GATEWAY_PASSWORD = new_password()  # one for every bench gateway


def run_worker(db_url: str, mqtt_url: str) -> None:
    """The ingest process (child)."""
    from meterhub.mqtt_ingest.worker import MqttIngestWorker, Settings

    worker = MqttIngestWorker(Settings(mqtt_url, client_id="bench-ingest"), create_engine(db_url, pool_size=2),
                              notify=False)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    worker.run()


def setup_gateways(admin_url: str, gateways: int, devices: int) -> list[str]:
    """Gateways with ``devices`` meters each (device addresses 1..n); returns their MQTT client ids."""
    group, meter_ids = make_fleet(admin_url, gateways * devices)
    engine = create_engine(admin_url)
    with engine.begin() as conn:
        gw_ids = conn.execute(text(
            "INSERT INTO gateways (group_id, property_id, name, host, port, framing, bus, mqtt_client_id, enabled, "
            "status, fault_count, created_at, mqtt_password_hash) SELECT :g, p.id, 'mq' || n, '', 0, 'mqtt', '{}', "
            "'gw' || n, true, 'unknown', 0, now(), :h FROM properties p, generate_series(1, :n) n "
            "WHERE p.group_id = :g ORDER BY n RETURNING id"),
            {"g": group, "n": gateways, "h": hash_password(GATEWAY_PASSWORD)}).scalars().all()
        for i, gw in enumerate(gw_ids):  # move the devices onto the MQTT gateways, addresses 1..devices
            conn.execute(text(
                "UPDATE devices d SET gateway_id = :gw, address = (x.rn - :lo)::text FROM ("
                "SELECT id, row_number() OVER (ORDER BY id) AS rn FROM devices WHERE group_id = :g) x "
                "WHERE d.id = x.id AND x.rn > :lo AND x.rn <= :hi"),
                {"gw": gw, "g": group, "lo": i * devices, "hi": (i + 1) * devices})
    engine.dispose()
    return [f"gw{n}" for n in range(1, gateways + 1)]


def payload(seq: int, per_message: int, devices: int) -> bytes:
    ts = (T0 + timedelta(minutes=seq)).isoformat()
    return json.dumps({"seq": seq, "ts": ts, "readings": [
        {"address": str((seq * per_message + k) % devices + 1), "channel": 1,
         "values": {"energy_kwh": f"{seq}.{k}", "power_kw": 1.5}} for k in range(per_message)]}).encode()


def write_auth(admin_url: str, broker: Mosquitto, service: Credentials) -> None:
    """The broker's password file and ACL, as ``meterhub mqtt export-auth`` writes them."""
    engine = create_engine(admin_url)
    with Session(engine) as session:
        write_private(broker.passwd, passwd_text(session, [service])[0])
    write_private(broker.acl, mosquitto_acl([service.username]))
    engine.dispose()


def publish(broker: Mosquitto, client_ids: list[str], start: int, count: int, per_message: int, devices: int,
            during: callable | None = None) -> None:
    """Publish ``count`` messages per gateway round-robin (QoS 1), each gateway signed in as itself, and wait
    until the broker has them all."""
    acked: set[tuple[str, int]] = set()
    clients = {}
    for gw in client_ids:
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=gw, clean_session=False)
        pub.username_pw_set(gw, GATEWAY_PASSWORD)
        pub.max_queued_messages_set(0)
        pub.max_inflight_messages_set(1000)
        pub.reconnect_delay_set(1, 2)
        pub.on_publish = lambda client, userdata, mid, reason, properties, gw=gw: acked.add((gw, mid))
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        clients[gw] = pub
    mids = []
    for i in range(count):
        seq, gw = start + i // len(client_ids), client_ids[i % len(client_ids)]
        # While the broker restarts, QoS 1 messages are queued by the client and sent after the reconnect.
        mids.append((gw, clients[gw].publish(f"meterhub/{gw}/readings", payload(seq, per_message, devices),
                                             qos=1).mid))
        if during and i == count // 2:
            during()
    deadline = time.monotonic() + 300
    while not acked.issuperset(mids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pub in clients.values():
        pub.disconnect()
        pub.loop_stop()


def wait_stored(admin_url: str, expected: int, timeout: float = 300) -> float:
    """Wait until ``expected`` (gateway, seq) rows exist; returns when that happened (perf_counter)."""
    engine = create_engine(admin_url)
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while True:
            count = conn.execute(text("SELECT count(*) FROM mqtt_sequences")).scalar()
            conn.commit()
            if count >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    engine.dispose()
    return time.perf_counter()


def spawn_worker(db_url: str, mqtt_url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bench.bench_mqtt", "--worker", db_url, mqtt_url],
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--per-message", type=int, default=5)
    parser.add_argument("--gateways", type=int, default=10)
    parser.add_argument("--devices", type=int, default=50, help="devices (meters) per gateway")
    parser.add_argument("--worker", nargs=2, metavar=("DB_URL", "MQTT_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.worker:
        run_worker(*args.worker)
        return
    broker = Mosquitto(auth=True)
    service = Credentials(SERVICE_USER, new_password())
    broker_url = with_credentials(broker.url, service)
    try:
        with throwaway_database() as admin_url:
            client_ids = setup_gateways(admin_url, args.gateways, args.devices)
            write_auth(admin_url, broker, service)
            broker.start()
            db = service_url(admin_url)
            worker = spawn_worker(db, broker_url)
            time.sleep(2)
            # 1. Throughput: publish everything, measure until all messages are committed (acks follow).
            n = args.messages
            start = time.perf_counter()
            publish(broker, client_ids, 0, n, args.per_message, args.devices)
            done = wait_stored(admin_url, n)
            rate = n / (done - start)
            # 2. Crash safety: kill -9 the ingest mid-stream and restart it, then restart the broker.
            crash_n = n // 2
            killer = threading.Timer(1.0, lambda: os.kill(worker.pid, signal.SIGKILL))
            killer.start()
            publish(broker, client_ids, n, crash_n, args.per_message, args.devices, during=broker.restart)
            killer.join()
            worker.wait()
            worker = spawn_worker(db, broker_url)
            wait_stored(admin_url, n + crash_n)
            time.sleep(1)
            engine = create_engine(admin_url)
            with engine.connect() as conn:
                seqs = conn.execute(text("SELECT count(*), count(DISTINCT (gateway_id, seq)) FROM mqtt_sequences")).one()
                readings = conn.execute(text("SELECT count(*) FROM readings")).scalar()
            engine.dispose()
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
    finally:
        broker.cleanup()
    expected = n + crash_n
    # A message's readings may share (meter, ts) with another's only if the payload repeats: not here.
    lost = expected - seqs[1]
    duplicated = seqs[0] - seqs[1]
    print_table("MQTT ingest (QoS 1, ack after commit)", [
        {"phase": "throughput", "messages": n, "readings_per_msg": args.per_message, "msgs_per_s": rate,
         "readings_per_s": rate * args.per_message},
        {"phase": "kill -9 ingest + broker restart", "messages": crash_n, "readings_per_msg": args.per_message,
         "msgs_per_s": float("nan"), "readings_per_s": float("nan")},
    ])
    log.info("crash phase: expected %d messages, stored %d distinct, lost %d, duplicated %d; readings %d "
             "(expected %d)", expected, seqs[1], lost, duplicated, readings, expected * args.per_message)
    write_results("mqtt", {
        "messages": n, "readings_per_message": args.per_message, "messages_per_s": round(rate),
        "readings_per_s": round(rate * args.per_message),
        "crash_test": {"messages": expected, "lost": lost, "duplicated": duplicated,
                       "readings": readings, "readings_expected": expected * args.per_message},
    })


if __name__ == "__main__":
    main()
