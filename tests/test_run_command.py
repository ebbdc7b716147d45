"""`make run` end to end: the whole platform starts on embedded servers with the simulated fleet, serves the
console, and a SIGTERM stops it like Ctrl-C: the children first, then the servers, no traceback, no port left
listening."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_run_starts_everything_and_sigterm_stops_it_cleanly(tmp_path):
    ports = {"web": _free_port(), "postgres": _free_port(), "redis": _free_port(), "mqtt": _free_port(),
             "fleet": random.randrange(20000, 30000, 4)}  # the fleet's gateways take fleet, fleet+1, fleet+2
    web = ports["web"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERHUB_")}
    env.update(METERHUB_INSTANCE_PATH=str(tmp_path / "instance"), METERHUB_POSTGRES_PORT=str(ports["postgres"]),
               METERHUB_REDIS_PORT=str(ports["redis"]), METERHUB_MQTT_PORT=str(ports["mqtt"]),
               METERHUB_DEMO_FLEET_PORT=str(ports["fleet"]))
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "meterhub", "run", "--port", str(web)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300  # a first start stores 400 days of history; timing belongs to make bench
        while "meterhub is running" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        assert "meterhub is running" in log.read_text(), log.read_text()[-3000:]
        while not _listening(web) and time.monotonic() < deadline:  # the banner comes just before the bind
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/login", timeout=10) as page:
            assert page.status == 200
        while not all(m in log.read_text() for m in ("Listening on", "starting (shard", "attached to gateway")) \
                and time.monotonic() < deadline:  # the worker and the collector are up; the 4G meter dialed in
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) is not None
    finally:
        if proc.poll() is None:  # a failure above: stop it properly (SIGKILL would orphan its children)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert "4G meter 86023000000000000001 attached" in text, "the demo's 4G meter did not dial in"
    assert text.index("postgres: embedded server on port") > text.index(" stopped: CollectorStats"), \
        f"the servers must stop after the processes that use them:\n{text[-3000:]}"
    time.sleep(1)
    left = [name for name, port in ports.items() if _listening(port)]
    assert not left, f"still listening after the stop: {left}"
