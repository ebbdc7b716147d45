"""The platform as people meet it, for ``bench_latency``: real collector, rq workers and scheduler processes
against simulated Acrel DTSD1352 meters, a throwaway database, a local webhook listener.

    with Rig(gateways=6, devices=10, poll_s=2.0) as rig:
        rig.relay(meter_id)            # the simulator's own relay state (True = closed)
        rig.first_seen[(meter_id, ts)] # when a reading was first seen committed (a 50 ms watcher)
        rig.hooks                      # (received at, verified payload) of every signed webhook

The simulators run in this process (an asyncio thread), so the benchmark reads their relays directly and can
take a meter off the bus (``rig.offline(meter_id, True)``). The processes are those ``meterhub run`` starts
(``meterhub collector``, ``scheduler``, and a ``worker`` per entry of ``meterhub.demo.WORKER_QUEUES``), with the
database, Redis and instance of this rig.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from bench.common import BENCH_INSTANCE, throwaway_database

log = logging.getLogger("bench.latency")
ROOT = Path(__file__).resolve().parent.parent
WEBHOOK_SECRET = "bench-latency-secret"


class Listener:
    """A local HTTP server that takes signed webhooks and keeps those whose signature verifies."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.bad = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                at = time.time()
                expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), self.headers.get("X-Meterhub-Timestamp", "")
                                                .encode() + b"." + body, hashlib.sha256).hexdigest()
                if hmac.compare_digest(expected, self.headers.get("X-Meterhub-Signature", "")):
                    outer.received.append((at, json.loads(body)))
                else:
                    outer.bad += 1
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()


class Rig:
    """Throwaway database + simulated fleet + the platform's processes + a watcher of readings and relays."""

    def __init__(self, gateways: int = 6, devices: int = 10, poll_s: float = 2.0, acceleration: float = 30.0) -> None:
        self.gateways, self.devices, self.poll_s, self.acceleration = gateways, devices, poll_s, acceleration
        self.stack = ExitStack()
        self.workdir = Path(tempfile.mkdtemp(prefix="meterhub-latency-"))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.first_seen: dict[tuple[int, Any], float] = {}
        self.relay_changes: dict[int, list[tuple[float, bool]]] = {}
        self.sims: dict[int, Any] = {}  # meter id -> simulator channel
        self.units: dict[int, tuple[Any, int]] = {}  # meter id -> (SimServer, unit)
        self._stop = threading.Event()

    # --- lifecycle -----------------------------------------------------------------------------------
    def __enter__(self) -> Rig:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.admin_url = self.stack.enter_context(throwaway_database())
        os.environ.setdefault("METERHUB_REDIS_URL", "redis://127.0.0.1:6379/0")
        os.environ.update(METERHUB_DATABASE_URL=self.admin_url, METERHUB_INSTANCE_PATH=str(BENCH_INSTANCE),
                          METERHUB_REDIS_NAMESPACE=f"bench-latency-{uuid.uuid4().hex[:8]}")
        from meterhub.app import create_app

        self.app = create_app()
        # payment orders need the address the provider calls back (this benchmark posts the callbacks itself)
        self.app.config["PUBLIC_BASE_URL"] = self.app.config.get("PUBLIC_BASE_URL") or "http://127.0.0.1:5000"
        self.stack.enter_context(self.app.app_context())
        self.engine = create_engine(self.admin_url, pool_size=3)
        self._start_fleet()
        self.listener = Listener()
        self._seed()
        self._map_simulators()
        threading.Thread(target=self._watch, daemon=True).start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("METERHUB_")}
        env.update({"METERHUB_DATABASE_URL": self.admin_url, "METERHUB_INSTANCE_PATH": str(BENCH_INSTANCE),
                    "METERHUB_REDIS_URL": self.app.config["REDIS_URL"],
                    "METERHUB_REDIS_NAMESPACE": self.app.config["REDIS_NAMESPACE"]})
        interval = str(self.poll_s)
        from meterhub.demo import WORKER_QUEUES  # the workers meterhub run starts, each with its queues

        commands = {"collector": ["collector", "--interval", interval, "--stagger", interval],
                    "scheduler": ["scheduler"],
                    **{f"worker-{name}": ["worker", *(arg for q in queues for arg in ("--queue", q))]
                       for name, queues in WORKER_QUEUES.items()}}
        for name, args in commands.items():
            with (self.workdir / f"{name}.log").open("wb") as out:
                self.procs[name] = subprocess.Popen([sys.executable, "-m", "meterhub", *args], env=env, stdout=out,
                                                    stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
        deadline = time.monotonic() + 120
        while len({m for m, _ in self.first_seen}) < len(self.sims):  # every meter read once by the collector
            if time.monotonic() > deadline:
                raise RuntimeError(f"the collector did not read every meter in 120 s; see {self.workdir}")
            self._alive()
            time.sleep(0.5)
        log.info("rig up: %d meters, processes %s, logs in %s", len(self.sims), sorted(self.procs), self.workdir)

    def stop(self) -> None:
        self._stop.set()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if getattr(self, "loop", None) is not None:
            async def stop() -> None:
                for server in self.servers:
                    await server.stop()

            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
        if getattr(self, "listener", None) is not None:
            self.listener.close()
        if getattr(self, "engine", None) is not None:
            self.engine.dispose()
        from meterhub.db import dispose_service_engines

        dispose_service_engines()
        self.stack.close()

    def _alive(self) -> None:
        dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited; see the logs in {self.workdir}")

    def log_of(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    # --- simulators ----------------------------------------------------------------------------------
    def _start_fleet(self) -> None:
        """DTSY1352 meters (the DTSD1352 driver's prepaid variant: a relay, platform-side prepaid by default),
        ``devices`` per bus, Modbus RTU over TCP, counters of meters in use; energy runs ``acceleration`` times
        faster than real time so that every read charges a little."""
        from meterhub.plugins import driver_registry, new_plugin_manager
        from meterhub.simulator import Faults, SimClock, SimServer

        driver = driver_registry(new_plugin_manager())["acrel_dtsd1352"]
        config = driver.validate_config({"variant": "dtsy1352"})
        clock = SimClock(acceleration=self.acceleration)
        self.servers: list[Any] = []
        self.onboarding: list[tuple[int, Any]] = []  # (gateway index, simulator)
        for g in range(self.gateways):
            sims = [driver.simulator(address, config, clock=clock, seed=1000 * g + address)
                    for address in range(1, self.devices + 1)]
            for sim in sims:
                for channel in sim.meter_channels():
                    channel.install(clock.now())
                self.onboarding.append((g, sim))
            self.servers.append(SimServer(sims, framing="rtu", faults=Faults()))  # faults per bus
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True, name="simulators").start()

        async def start() -> None:
            for server in self.servers:
                await server.start()

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)

    def _map_simulators(self) -> None:
        by_port = {server.port: server for server in self.servers}
        for meter_id, port, address in self.sql(
                "SELECT m.id, g.port, d.address FROM meters m JOIN devices d ON d.id = m.device_id "
                "JOIN gateways g ON g.id = d.gateway_id ORDER BY m.id"):
            server = by_port[port]
            self.sims[meter_id] = server.by_unit[int(address)].meter_channels()[0]
            self.units[meter_id] = (server, int(address))

    def relay(self, meter_id: int) -> bool:
        """The simulated meter's relay: True when closed."""
        return bool(self.sims[meter_id].relay_closed)

    def offline(self, meter_id: int, off: bool) -> None:
        """Take the meter off its bus (it answers nothing) or put it back."""
        server, unit = self.units[meter_id]
        (server.faults.dead.add if off else server.faults.dead.discard)(unit)

    # --- the database --------------------------------------------------------------------------------
    def sql(self, query: str, **params: Any) -> list[Any]:
        with self.engine.begin() as conn:
            result = conn.execute(text(query), params)
            return list(result) if result.returns_rows else []

    def _seed(self) -> None:
        from meterhub.alarms import secrets as secret_store
        from meterhub.alarms.models import NotifierConfig
        from meterhub.db import service_session
        from meterhub.demo_seed import seed_prepaid, seed_tenancy

        with service_session() as session:
            group = seed_tenancy(session, "latency")
            self._onboard(session, group)
            seed_prepaid(session, group)
            self.group_id = group.id
            for notifier, recipients, secrets in (("webhook", [self.listener.url], {"secret": WEBHOOK_SECRET}),
                                                  ("portal", [], {})):
                config = NotifierConfig(group_id=group.id, notifier=notifier, name=f"bench {notifier}",
                                        recipients=recipients, settings={}, kinds=[], throttle_minutes=0,
                                        max_per_hour=100_000)
                session.add(config)
                session.flush()
                config.secrets = secret_store.merge({}, secrets, f"{group.id}:{config.id}")

    def _onboard(self, session: Any, group: Any) -> None:
        """As ``demo_seed.onboard_fleet``: gateways alternate between the two properties, one room per meter,
        each meter read before it is saved."""
        from sqlalchemy import select

        from meterhub.demo_seed import _rooms
        from meterhub.devices.onboarding import DeviceSpec, create_gateway, onboard_device
        from meterhub.tenants.models import Property

        props = {p.code: p for p in session.execute(select(Property).where(Property.group_id == group.id)).scalars()}
        rooms = {code: _rooms(session, p.id) for code, p in props.items()}
        gateways = []
        for index, server in enumerate(self.servers):
            code = "MALL" if index % 2 == 0 else "DORM"
            gateways.append((code, create_gateway(session, props[code], f"bench-gw-{index + 1}", "127.0.0.1",
                                                  server.port, "modbus-rtu-over-tcp", {"baud": 9600})))
        for index, sim in self.onboarding:
            code, gateway = gateways[index]
            onboard_device(session, gateway, DeviceSpec("acrel_dtsd1352", sim.address, sim.serial,
                                                        {"variant": "dtsy1352"}, [rooms[code].pop(0)]))

    def _watch(self) -> None:
        """Every 50 ms: new committed readings (meter_latest) and every simulated relay change, timestamped."""
        relays = {m: self.relay(m) for m in self.sims}
        engine = create_engine(self.admin_url, pool_size=1)
        while not self._stop.is_set():
            now = time.time()
            for meter_id, closed in relays.items():
                if self.relay(meter_id) != closed:
                    relays[meter_id] = not closed
                    self.relay_changes.setdefault(meter_id, []).append((now, not closed))
            try:
                with engine.connect() as conn:
                    rows = conn.execute(text("SELECT meter_id, ts FROM meter_latest")).all()
            except Exception:  # noqa: BLE001 - the watcher keeps going; a missed round is 50 ms late
                rows = []
            seen = time.time()
            for meter_id, ts in rows:
                self.first_seen.setdefault((meter_id, ts), seen)
            time.sleep(0.05)
        engine.dispose()

    def changed_to(self, meter_id: int, closed: bool, after: float) -> float | None:
        """When the simulated relay of ``meter_id`` first became ``closed`` after ``after`` (epoch), if it did."""
        for at, state in self.relay_changes.get(meter_id, []):
            if at >= after and state == closed:
                return at
        return None
