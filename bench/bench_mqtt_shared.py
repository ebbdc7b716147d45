"""Shared MQTT ingest: QoS 1 messages/s with 1 and with 3 ingest processes on one ``$share`` group (Mosquitto).

    python -m bench.bench_mqtt_shared [--messages 20000] [--per-message 5] [--gateways 10]

A throwaway database and a private Mosquitto (auth, persistence, unlimited queues) as in ``bench_mqtt``. For
each process count, the ingest processes subscribe to ``$share/bench/meterhub/+/readings`` (ack after commit,
dedupe on (gateway, seq)), then ``--messages`` are published and the time until all are committed is taken.
Every process shares this machine's cores with the broker, the publisher and PostgreSQL. Results merged into
bench/results.json under ``mqtt_shared``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time

from sqlalchemy import create_engine, text

from meterhub.mqtt_auth.credentials import Credentials, with_credentials
from meterhub.mqtt_auth.passwords import new_password
from meterhub.mqtt_auth.rules import SERVICE_USER

from .bench_mqtt import publish, setup_gateways, wait_stored, write_auth
from .common import Mosquitto, print_table, service_url, throwaway_database, write_results

log = logging.getLogger("bench.mqtt_shared")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_worker(db_url: str, mqtt_url: str, client_id: str, ready: str) -> None:
    """One shared ingest process (child); creates the file ``ready`` once it has subscribed."""
    import threading

    from meterhub.mqtt_ingest.worker import MqttIngestWorker, Settings

    settings = Settings(mqtt_url, client_id=client_id, shared=True, share_group="bench")
    worker = MqttIngestWorker(settings, create_engine(db_url, pool_size=2), notify=False)
    worker.client.on_subscribe = lambda *_: open(ready, "w").close()
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    signal.pause()  # until SIGTERM (its handler stops the worker); run() finishes its batch
    runner.join(30)


def spawn(db_url: str, mqtt_url: str, client_id: str, ready: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bench.bench_mqtt_shared", "--worker", db_url, mqtt_url, client_id,
                             ready], cwd=ROOT)


def stored(admin_url: str) -> tuple[int, int]:
    engine = create_engine(admin_url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT count(*), count(DISTINCT (gateway_id, seq)) FROM mqtt_sequences")).one()
    engine.dispose()
    return int(row[0]), int(row[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--per-message", type=int, default=5)
    parser.add_argument("--gateways", type=int, default=10)
    parser.add_argument("--devices", type=int, default=50, help="devices (meters) per gateway")
    parser.add_argument("--worker", nargs=4, metavar=("DB_URL", "MQTT_URL", "CLIENT_ID", "READY"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.worker:
        run_worker(*args.worker)
        return
    broker = Mosquitto(auth=True)
    service = Credentials(SERVICE_USER, new_password())
    broker_url = with_credentials(broker.url, service)
    rows, results = [], {}
    tmp = tempfile.mkdtemp(prefix="meterhub-bench-shared-")
    try:
        with throwaway_database() as admin_url:
            client_ids = setup_gateways(admin_url, args.gateways, args.devices)
            write_auth(admin_url, broker, service)
            broker.start()
            db = service_url(admin_url)
            sent = 0
            for count in (1, 3):
                # the same client ids again: a stopped member's persistent session would keep its share
                ready = [os.path.join(tmp, f"ready-{count}-{i}") for i in range(count)]
                workers = [spawn(db, broker_url, f"bench-shared-{i}", ready[i]) for i in range(count)]
                deadline = time.monotonic() + 120
                while not all(os.path.exists(r) for r in ready):  # every member subscribed before publishing
                    if time.monotonic() > deadline:
                        raise RuntimeError("the ingest processes did not subscribe within 120 s")
                    time.sleep(0.1)
                start = time.perf_counter()
                publish(broker, client_ids, sent, args.messages, args.per_message, args.devices)
                done = wait_stored(admin_url, sent + args.messages)
                sent += args.messages
                rate = args.messages / (done - start)
                for worker in workers:
                    worker.send_signal(signal.SIGTERM)
                for worker in workers:
                    worker.wait(30)
                rows.append({"ingest_processes": count, "messages": args.messages, "msgs_per_s": rate,
                             "readings_per_s": rate * args.per_message})
                results[f"processes_{count}"] = {"messages_per_s": round(rate),
                                                 "readings_per_s": round(rate * args.per_message)}
            total, distinct = stored(admin_url)
    finally:
        broker.cleanup()
    print_table("MQTT ingest, shared subscription (QoS 1, ack after commit)", rows)
    ratio = results["processes_3"]["messages_per_s"] / max(results["processes_1"]["messages_per_s"], 1)
    log.info("3 / 1 processes: %.2f x; stored %d messages, %d distinct (expected %d)", ratio, total, distinct, sent)
    write_results("mqtt_shared", {"messages_per_phase": args.messages, "readings_per_message": args.per_message,
                                  **results, "scaling_3_over_1": round(ratio, 2),
                                  "stored": total, "distinct": distinct, "expected": sent})


if __name__ == "__main__":
    main()
