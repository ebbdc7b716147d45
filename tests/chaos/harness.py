"""A whole platform to break: private PostgreSQL and Redis, ``meterhub run`` with its simulated fleet, load.

    with Platform(workdir) as p:                  # ~60 s: servers, migrations, demo seed, every process up
        pid = p.pid("collector")                  # from the supervisor's log lines
        p.kill("collector")                        # kill -9
        p.restart_postgres(down_s=8)               # stop the private cluster, start it again
        with TopUps(p) as load: ...                # API top-ups, each retried with its own idempotency key

PostgreSQL and Redis are servers this harness starts on free ports (never the machine's shared 5432/6379);
``meterhub run`` gets their URLs, so it does not own them and keeps running while they restart. Used by
``tests/chaos`` and ``bench/bench_recovery.py``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

START_S = 240.0  # meterhub run: initdb aside, migrations + demo seed + children
POLL_S = 2.0  # the collector polls every meter this often during the chaos tests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.25) -> float:
    """Seconds it took until ``predicate()`` was true; AssertionError naming ``what`` after ``timeout``."""
    start = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - start
        except Exception:  # noqa: BLE001 - a server being restarted; ask again
            pass
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(step)


class Platform:
    """Private servers plus one ``meterhub run`` process tree."""

    def __init__(self, workdir: Path, poll_s: float = POLL_S) -> None:
        self.workdir = Path(workdir)
        self.poll_s = poll_s
        self.instance = self.workdir / "instance"
        self.servers = self.workdir / "servers"
        self.log_path = self.workdir / "run.log"
        self.web_port = free_port()
        self.pg_port, self.redis_port, self.mqtt_port = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.pg: Any = None
        self.redis: Any = None
        self.mqtt: Any = None
        self.engine: Engine | None = None
        self.token = ""
        self.meter_side: MeterSideMeter | None = None

    # --- lifecycle -----------------------------------------------------------------------------------
    def __enter__(self) -> Platform:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        from meterhub.services.postgres import start_embedded_postgres
        from meterhub.services.redis import start_embedded_redis

        self.pg = start_embedded_postgres(self.servers, port=self.pg_port)
        self.redis = start_embedded_redis(self.servers, port=self.redis_port)
        db_url = make_url(self.pg.url).set(database="meterhub")
        self.mqtt = self._start_broker(db_url.render_as_string(False))
        env = {k: v for k, v in os.environ.items() if not k.startswith("METERHUB_")}
        env.update(METERHUB_INSTANCE_PATH=str(self.instance), METERHUB_DATABASE_URL=db_url.render_as_string(False),
                   METERHUB_REDIS_URL=self.redis.url, METERHUB_MQTT_URL=self.mqtt.url,
                   METERHUB_DEMO_FLEET_PORT=str(_fleet_port()), METERHUB_REDIS_NAMESPACE="chaos")
        with self.log_path.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "meterhub", "run", "--port", str(self.web_port),
                 "--collector-interval", str(self.poll_s), "--no-history"],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: "meterhub is running" in self.log(), START_S, "meterhub run started", step=0.5)
        self.engine = create_engine(db_url, pool_pre_ping=True, pool_size=2)
        for name in ("web", "worker-commands", "worker-periodic", "worker-default", "scheduler", "collector"):
            # the scheduler starts once the collector has read every polled meter (meterhub run, at most 2 min)
            wait_until(lambda: self.pid(name), 150, f"{name} started", step=0.5)
        wait_until(lambda: self.readings_since(time.time() - 60) > 0, 60, "the collector stores readings")
        self.token = self._api_token()
        wait_until(lambda: self.api("GET", "/accounts?limit=1")[0] == 200, 60, "the web API answers")
        self.meter_side = MeterSideMeter(self)
        # the collector reads its gateway list every 60 s: the new bus is polled after the next reload
        wait_until(lambda: self.meter_side.meter_id in self.polled_meters(), 150, "the meter-side meter is polled")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.meter_side is not None:
            self.meter_side.close()
        if self.engine is not None:
            self.engine.dispose()
        for server in (self.mqtt, self.redis, self.pg):
            if server is not None:
                server.stop()

    # --- processes -----------------------------------------------------------------------------------
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pid(self, name: str) -> int:
        """The current pid of child ``name`` (the supervisor logs every start and restart)."""
        found = re.findall(rf"(?:started {re.escape(name)} \(pid (\d+)\)|{re.escape(name)} restarted \(pid (\d+))",
                           self.log())
        if not found:
            raise AssertionError(f"no {name} in the log of meterhub run")
        return int([a or b for a, b in found][-1])

    def restarts(self, name: str) -> int:
        return len(re.findall(rf"{re.escape(name)} restarted \(pid", self.log()))

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        pid = self.pid(name)
        os.kill(pid, sig)
        return pid

    def alive(self, name: str) -> bool:
        try:
            os.kill(self.pid(name), 0)
        except ProcessLookupError:
            return False
        return _state(self.pid(name)) not in ("Z", "X", "")

    def wait_restarted(self, name: str, old_pid: int, timeout: float = 20.0) -> float:
        return wait_until(lambda: self.pid(name) != old_pid and self.alive(name), timeout, f"{name} restarted")

    # --- servers -------------------------------------------------------------------------------------
    def restart_postgres(self, down_s: float) -> tuple[float, float]:
        """Stop the private cluster for ``down_s`` seconds; returns (stopped at, started at) epoch seconds."""
        from meterhub.services.postgres import start_embedded_postgres

        self.pg.stop()
        stopped = time.time()
        time.sleep(down_s)
        self.pg = start_embedded_postgres(self.servers, port=self.pg_port)
        return stopped, time.time()

    def _start_broker(self, db_url: str) -> Any:
        """The embedded amqtt broker as ``meterhub run`` would start it (auth, topic rules, message journal in
        the instance folder), but owned by this harness so that it can be killed and started again."""
        from meterhub.config import DEFAULTS, finish
        from meterhub.services.mqtt import start_embedded_mqtt

        config = {**DEFAULTS, "DATABASE_URL": db_url}
        finish(config, str(self.instance))  # the service role's URL, its password generated in the instance
        self._broker_auth_url = config["SERVICE_DATABASE_URL"]
        return start_embedded_mqtt(self.instance, port=self.mqtt_port, auth_database_url=self._broker_auth_url)

    def restart_mqtt(self, down_s: float) -> tuple[float, float]:
        """kill -9 the broker, start it again on the same port after ``down_s``; (killed at, started at)."""
        from meterhub.services.mqtt import start_embedded_mqtt

        os.kill(self.mqtt.pid, signal.SIGKILL)
        try:
            os.waitpid(self.mqtt.pid, 0)  # reaped: no zombie keeps its pid file alive
        except ChildProcessError:
            pass
        killed = time.time()
        time.sleep(down_s)
        self.mqtt = start_embedded_mqtt(self.instance, port=self.mqtt_port, auth_database_url=self._broker_auth_url)
        return killed, time.time()

    def mqtt_gateway(self) -> tuple[str, str, int]:
        """A push gateway with one meter in the demo's first property: (client id, password, meter id)."""
        from sqlalchemy.orm import Session

        from meterhub.devices.models import Device, Gateway, Meter
        from meterhub.mqtt_auth.credentials import issue_gateway_password

        assert self.engine is not None
        marker = secrets.token_hex(4)
        with Session(self.engine) as s:
            group_id, property_id = s.execute(text("SELECT group_id, id FROM properties ORDER BY id LIMIT 1")).one()
            gateway = Gateway(group_id=group_id, property_id=property_id, name=f"chaos-mqtt-{marker}",
                              framing="mqtt", mqtt_client_id=f"chaos-mqtt-{marker}")
            credentials = issue_gateway_password(gateway)
            s.add(gateway)
            s.flush()
            device = Device(group_id=group_id, property_id=property_id, gateway_id=gateway.id, driver_key="test",
                            address="1", serial=f"chaos-mqtt-{marker}")
            s.add(device)
            s.flush()
            meter = Meter(group_id=group_id, property_id=property_id, device_id=device.id, channel=1,
                          utility="electricity")
            s.add(meter)
            s.commit()
            return credentials.username, credentials.password, meter.id

    def restart_redis(self, down_s: float) -> tuple[float, float]:
        from meterhub.services.redis import start_embedded_redis

        self.redis.stop()
        stopped = time.time()
        time.sleep(down_s)
        self.redis = start_embedded_redis(self.servers, port=self.redis_port)
        return stopped, time.time()

    # --- the database --------------------------------------------------------------------------------
    def sql(self, query: str, **params: Any) -> list[Any]:
        assert self.engine is not None
        with self.engine.begin() as conn:
            result = conn.execute(text(query), params)
            return list(result) if result.returns_rows else []

    def polled_meters(self, window_s: float = 15.0) -> list[int]:
        """Meters with a polled reading in the last ``window_s`` seconds (the ones the collector reads)."""
        return sorted(self.meters_read_between(time.time() - window_s, time.time() + 60))

    def readings_since(self, epoch: float) -> int:
        return self.sql("SELECT count(*) FROM readings WHERE source = 'poll' AND ts >= to_timestamp(:t)",
                        t=epoch)[0][0]

    def meters_read_between(self, start: float, end: float) -> set[int]:
        """Meters the collector polled in the window (a 4G meter that dials in uploads on its own schedule)."""
        return {r[0] for r in self.sql(
            "SELECT DISTINCT r.meter_id FROM readings r JOIN meters m ON m.id = r.meter_id "
            "JOIN devices d ON d.id = m.device_id JOIN gateways g ON g.id = d.gateway_id "
            "WHERE r.source = 'poll' AND g.framing <> 'acrel-4g' AND r.ts BETWEEN to_timestamp(:a) "
            "AND to_timestamp(:b)", a=start, b=end)}

    def ledger_report(self) -> Any:
        from sqlalchemy.orm import Session

        from meterhub.ledger.check import check_ledger

        with Session(self.engine) as session:
            return check_ledger(session)

    def _api_token(self) -> str:
        from meterhub.api.tokens import token_hash

        secret_prefix = secrets.token_hex(4)
        secret = f"mh_{secret_prefix}_{secrets.token_urlsafe(32)}"
        self.sql("INSERT INTO api_tokens (group_id, operator_id, name, prefix, token_hash, scopes, created_at, "
                 "revoked_by) SELECT group_id, id, 'chaos', :p, :h, CAST(:s AS jsonb), now(), '' FROM operators "
                 "WHERE username = 'admin' LIMIT 1", p=secret_prefix, h=token_hash(secret),
                 s=json.dumps(["read", "topup", "commands"]))
        return secret

    # --- the web API ---------------------------------------------------------------------------------
    def api(self, method: str, path: str, body: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.web_port}/api/v1{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as err:
            return err.code, {}


class TopUps:
    """API top-ups in a thread, one every ``every_s``; each is retried with its own key until it is booked."""

    def __init__(self, platform: Platform, every_s: float = 0.5, amount: str = "1.00") -> None:
        self.platform, self.every_s, self.amount = platform, every_s, amount
        self.accounts = [r[0] for r in platform.sql("SELECT id FROM prepaid_accounts WHERE status = 'open' "
                                                    "ORDER BY id LIMIT 5")]
        assert self.accounts, "the demo seed opened no prepaid account"
        self.meter_side = platform.meter_side
        if self.meter_side is not None and self.meter_side.account_id not in self.accounts:  # top-ups = writes
            self.accounts.append(self.meter_side.account_id)
        self.booked: dict[str, int] = {}  # idempotency key -> account
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TopUps:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            account = self.accounts[n % len(self.accounts)]
            side = self.meter_side if self.meter_side is not None and account == self.meter_side.account_id else None
            amount = side.next_amount() if side is not None else Decimal(self.amount)  # distinct: order shows
            key = f"chaos-{secrets.token_hex(6)}"
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:  # the same key on every retry, even after _stop
                try:
                    status, _ = self.platform.api("POST", f"/accounts/{account}/topups",
                                                  {"amount": str(amount), "channel": "transfer"},
                                                  {"Idempotency-Key": key}, timeout=5)
                except OSError:
                    status = 0
                if status in (200, 201):
                    self.booked[key] = account
                    if side is not None:
                        side.booked.append(amount)  # one top-up at a time: booking order
                    break
                self.failures += 1
                time.sleep(0.5)
            n += 1
            self._stop.wait(self.every_s)

    def applied_once(self) -> dict[str, int]:
        """Keys whose transfer count is not exactly one (empty when every key was applied once)."""
        counts = dict.fromkeys(self.booked, 0)
        for key, count in self.platform.sql(
                "SELECT idempotency_key, count(*) FROM ledger_transfers WHERE idempotency_key LIKE '%chaos-%' "
                "GROUP BY idempotency_key"):
            short = key[key.index("chaos-"):]
            counts[short] = counts.get(short, 0) + count
        return {k: v for k, v in counts.items() if v != 1}


class MeterSideMeter:
    """A DTSY1352 in meter-side prepaid mode (``prepaid_mode: meter``: it keeps the money and takes each top-up
    only with its purchase count + 1) on an RTU bus this process simulates, so that its record of accepted writes
    can be read; registered as a gateway of the demo's first property, with an open account over it.

    The demo fleet's Acrel meters run in platform mode (issue 17): without this meter no chaos scenario would
    write money to a meter. ``booked`` holds the amounts of the account's top-ups in the order they were booked.
    """

    CONFIG = {"variant": "dtsy1352", "prepaid_mode": "meter"}

    def __init__(self, platform: Platform) -> None:
        import asyncio

        from meterhub.plugins import driver_registry
        from meterhub.simulator.server import SimServer

        self.sim = driver_registry()["acrel_dtsd1352"].simulator(1, self.CONFIG)
        self.loop = asyncio.new_event_loop()
        self.server = SimServer([self.sim], framing="rtu")
        self.loop.run_until_complete(self.server.start())
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.booked: list[Decimal] = []
        try:
            self.meter_id, self.account_id = self._register(platform)
        except BaseException:
            self.close()
            raise

    def next_amount(self) -> Decimal:
        """1.01, 1.02, …: no two top-ups of this account carry the same amount."""
        return Decimal("1.00") + Decimal(len(self.booked) + 1) / 100

    def accepted(self) -> list[tuple[int, Decimal]]:
        """The meter's record of accepted writes: (purchase count, amount), in the order it took them."""
        return list(self.sim.channel.accepted_topups)

    def _register(self, platform: Platform) -> tuple[int, int]:
        from flask import Flask

        from meterhub.tenants import audit

        assert platform.engine is not None
        # the audit chain is signed with the platform's key (instance/audit_key): an app that knows only the instance
        app, key_before = Flask("chaos-harness", instance_path=str(platform.instance)), audit._process_key
        try:
            with app.app_context():
                return self._open_account(platform)
        finally:
            audit._process_key = key_before  # this process's other apps keep their own key

    def _open_account(self, platform: Platform) -> tuple[int, int]:
        from sqlalchemy.orm import Session

        from meterhub.devices.models import Device, Gateway, Meter
        from meterhub.modules.prepaid import accounts

        assert platform.engine is not None
        group_id, property_id = platform.sql(
            "SELECT a.group_id, a.property_id FROM prepaid_accounts a WHERE a.status = 'open' ORDER BY a.id LIMIT 1")[0]
        with Session(platform.engine) as s:
            gateway = Gateway(group_id=group_id, property_id=property_id, name="chaos-meter-side", host="127.0.0.1",
                              port=self.server.port, framing="modbus-rtu-over-tcp", bus={"baud": 9600, "parity": "N", "stop_bits": 1})
            s.add(gateway)
            s.flush()
            device = Device(group_id=group_id, property_id=property_id, gateway_id=gateway.id,
                            driver_key="acrel_dtsd1352", address="1", serial=f"chaos-meter-side-{secrets.token_hex(3)}",
                            config=dict(self.CONFIG))
            s.add(device)
            s.flush()
            meter = Meter(group_id=group_id, property_id=property_id, device_id=device.id, channel=1,
                          utility="electricity")
            s.add(meter)
            s.flush()
            account = accounts.create_account(s, group_id, property_id, [meter.id], customer_name="Chaos meter-side",
                                              phone="13800000000", actor="chaos", evaluate=False)  # opened
            s.commit()
            return meter.id, account.id

    def close(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class MqttReadings:
    """A push gateway publishing one QoS 1 reading every ``every_s`` (seq 1, 2, …), each retried until the broker
    acknowledges it, as a gateway does across a broker restart (a retry may deliver a message twice: the ingest
    drops repeats by (gateway, seq))."""

    def __init__(self, platform: Platform, gateway: tuple[str, str, int], every_s: float = 0.1) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.client_id, password, self.meter_id = gateway
        self.every_s = every_s
        self.acked = 0  # readings the broker acknowledged (seq 1..acked)
        self.start_ts = time.time() - 3600  # an hour back, one second per seq: distinct and never in the future
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False)
        self.client.username_pw_set(self.client_id, password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.connect("127.0.0.1", platform.mqtt_port)
        self.client.loop_start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MqttReadings:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        self.client.disconnect()
        self.client.loop_stop()

    def _payload(self, seq: int) -> bytes:
        from datetime import datetime, timezone

        ts = datetime.fromtimestamp(self.start_ts + seq, timezone.utc).isoformat()
        return json.dumps({"seq": seq, "ts": ts, "readings": [{"address": "1",
                                                                "values": {"energy_kwh": str(1000 + seq)}}]}).encode()

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            while True:  # until acknowledged, even after stop(): every seq started is delivered
                try:
                    info = self.client.publish(f"meterhub/{self.client_id}/readings", self._payload(seq), qos=1)
                    info.wait_for_publish(3)
                    if info.is_published():
                        break
                except (RuntimeError, ValueError, OSError):
                    pass
                time.sleep(0.5)
            self.acked = seq
            self._stop.wait(self.every_s)


def _fleet_port() -> int:
    """A base port with the next two free too (the fleet's three gateways)."""
    import random

    for _ in range(50):
        base = random.randrange(20000, 30000, 4)
        if all(_free(base + i) for i in range(3)):
            return base
    raise RuntimeError("no free port range for the simulated fleet")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""
