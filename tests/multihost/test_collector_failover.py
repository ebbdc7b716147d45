"""Collectors that fail over, on three "hosts" (network namespaces) with simulated gateways on a fourth.

One collector host is cut off with nftables, from everything or from the database and Redis only (its collector
keeps running and still reaches the gateways, the harder case: it must stop talking to its buses by itself
before their leases can be granted again), and another collector is killed with SIGKILL. The third takes every bus over within the lease time
plus a renewal and one polling interval; the simulators record every master of every bus and no two ever
overlap; relay commands sent through the failover are confirmed once each; no reading is stored twice. The
cut host is healed: its collector rejoins and takes its rendezvous share back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from meterhub.collector import leases
from meterhub.commands import worker
from meterhub.commands.service import create_command
from meterhub.db import service_engine, service_session
from meterhub.devices.models import Meter
from meterhub.devices.onboarding import DeviceSpec, create_gateway, onboard_device
from meterhub.tenants.models import Property
from tests.multihost.netns import Host, Network

ROOT = Path(__file__).resolve().parents[2]
BUSES, DEVICES = 12, 2
INTERVAL_S, TTL_S = 2.0, 4.0
RENEW_S = TTL_S / 3  # the collector's default renewal for this TTL (min(5, ttl/3))
BUS_TIMEOUT_S = 0.3


def _wait(predicate, timeout: float, what: str, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(step)


def _moved(url: str, host: str, port: int) -> str:
    return make_url(url).set(host=host, port=port).render_as_string(hide_password=False)


class Collector:
    """``meterhub collector`` inside a host, reaching PostgreSQL and Redis through the root's forwarders. Its
    own UTS namespace gives it the host's name, so its member id names its "host" (collectors recognise dead
    collectors of their own host by pid; the hosts here share one pid space, so they must not look alike)."""

    def __init__(self, host: Host, env: dict[str, str], only: list[int], log_dir: Path) -> None:
        self.host, self.env, self.log_path = host, env, log_dir / f"collector-{host.name}.log"
        self.args = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host.name,
                     sys.executable, "-m", "meterhub", "collector", "--only", ",".join(map(str, only)),
                     "--interval", str(INTERVAL_S), "--lease-ttl", str(TTL_S), "--reload", "3", "--stagger", "1"]
        with self.log_path.open("ab") as out:
            self.proc = host.popen(self.args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)

    @property
    def member(self) -> str:
        return f"collector:{self.host.name}:{self.proc.pid}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class World:
    """The database rows (gateways at the simulator ports), the simulator report, lease queries."""

    def __init__(self, app, group, gw_host: Host, report: Path) -> None:
        self.app, self.report_path = app, report
        ports = sorted(int(p) for p in self.report())
        self.gateway_ids: list[int] = []
        self.meters: dict[int, list[int]] = {}  # gateway -> meter ids
        self.port_of: dict[int, int] = {}
        with app.app_context(), service_session() as s:
            prop = s.get(Property, group.property_id)
            for n, port in enumerate(ports):
                gateway = create_gateway(s, prop, f"MH {group.marker} {n}", gw_host.ip, port, "modbus-rtu-over-tcp")
                gateway.bus = {"timeout": BUS_TIMEOUT_S}
                for unit in range(1, DEVICES + 1):
                    onboard_device(s, gateway, DeviceSpec("acrel_dtsd1352", unit, f"MH{group.marker[-6:]}{n}x{unit}",
                                                          {"variant": "dtsy1352"}), verify=False)
                s.flush()
                self.gateway_ids.append(gateway.id)
                self.port_of[gateway.id] = port
                self.meters[gateway.id] = list(s.execute(
                    text("SELECT m.id FROM meters m JOIN devices d ON d.id = m.device_id WHERE d.gateway_id = :g "
                         "ORDER BY d.address"), {"g": gateway.id}).scalars())

    def report(self) -> dict[str, Any]:
        return json.loads(self.report_path.read_text())

    def owners(self) -> dict[int, str]:
        with self.app.app_context(), service_engine().connect() as c:
            rows = c.execute(text("SELECT gateway_id, owner FROM bus_leases WHERE gateway_id = ANY(:g) "
                                  "AND owner IS NOT NULL AND expires_at > now()"), {"g": self.gateway_ids}).all()
        return {int(g): str(o) for g, o in rows}

    def masters(self, gateway_id: int) -> list[list[Any]]:
        return self.report()[str(self.port_of[gateway_id])]["masters"]

    def first_request_from(self, gateway_id: int, ip: str, after: float) -> float | None:
        times = [m[1] for m in self.masters(gateway_id) if m[0].split(":")[0] == ip and m[1] >= after]
        return min(times) if times else None

    def latest_reading(self, meter_id: int) -> datetime | None:
        with self.app.app_context(), service_session() as s:
            return s.execute(text("SELECT max(ts) FROM readings WHERE meter_id = :m"), {"m": meter_id}).scalar()


def _run_commands(app, meter_ids: list[int], results: dict[int, str], closed: bool) -> None:
    """Switch each meter through the normal worker path, retrying (as rq would) until a final state."""
    with app.app_context():
        with service_session() as s:
            ids = [create_command(s, s.get(Meter, m), "switch", {"closed": closed}).id for m in meter_ids]
        for command_id in ids:
            deadline = time.monotonic() + 150
            state = "queued"
            while time.monotonic() < deadline:
                state = worker.execute(command_id)
                if state in ("confirmed", "failed", "expired", "cancelled"):
                    break
                time.sleep(1.0)
            results[command_id] = state


@pytest.mark.parametrize("cut_from", ["database", "everything"])
def test_collectors_fail_over_without_two_masters_and_take_their_share_back(app, group, network: Network,
                                                                            tmp_path, cut_from: str) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed to give each collector host its own host name")
    gw = network.add_host("gw")
    hosts = [network.add_host(f"c{i}") for i in (1, 2, 3)]
    report = tmp_path / "gateways.json"
    with (tmp_path / "gateways.log").open("wb") as out:
        sim = gw.popen([sys.executable, "-m", "tests.multihost.gateways", "--host", gw.ip, "--buses", str(BUSES),
                        "--devices", str(DEVICES), "--report", str(report)], cwd=ROOT, stdout=out,
                       stderr=subprocess.STDOUT)
    _wait(report.exists, 60, "the simulated gateways")
    world = World(app, group, gw, report)

    db_url, redis_url = make_url(app.config["DATABASE_URL"]), make_url(app.config["REDIS_URL"])
    pg_port = network.forward(db_url.port or 5432, listen_port=15432)
    redis_port = network.forward(redis_url.port or 6379, listen_port=16379)
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERHUB_")}
    env.update({"METERHUB_DATABASE_URL": _moved(app.config["DATABASE_URL"], network.root_ip, pg_port),
                "METERHUB_SERVICE_DATABASE_URL": _moved(app.config["SERVICE_DATABASE_URL"], network.root_ip, pg_port),
                "METERHUB_REDIS_URL": _moved(app.config["REDIS_URL"], network.root_ip, redis_port),
                "METERHUB_REDIS_NAMESPACE": app.config["REDIS_NAMESPACE"], "METERHUB_MQTT_URL": app.config["MQTT_URL"],
                "METERHUB_INSTANCE_PATH": app.instance_path})
    collectors = [Collector(h, env, world.gateway_ids, tmp_path) for h in hosts]
    ip_of = {c.member: c.host.ip for c in collectors}
    try:
        # 1. Three members share the buses as rendezvous hashing says, each bus polled by its owner's host.
        members = [c.member for c in collectors]
        share = leases.assign(members, world.gateway_ids)
        _wait(lambda: world.owners() == share, 90, f"the rendezvous placement over three collectors {share}")
        _wait(lambda: all(world.first_request_from(g, ip_of[share[g]], 0) for g in world.gateway_ids), 30,
              "every bus polled by its owner")

        # 2. Cut the host of the collector with the most buses, SIGKILL the next one; the third takes over.
        by_size = sorted(collectors, key=lambda c: -sum(1 for o in share.values() if o == c.member))
        cut, killed, survivor = by_size
        failed_at = time.time()
        if cut_from == "database":  # it still reaches its gateways: it must fence itself
            cut.host.cut(ports=[pg_port, redis_port])
        else:
            cut.host.cut()
        killed.host.kill(killed.proc)
        moved = [g for g in world.gateway_ids if share[g] != survivor.member]
        results: dict[int, str] = {}
        relay_meters = [world.meters[g][0] for g in moved[:4]]
        commands = threading.Thread(target=_run_commands, args=(app, relay_meters, results, False))
        commands.start()
        bound = TTL_S + RENEW_S + INTERVAL_S  # lease lapses, the survivor's next tick takes it, polls within an interval
        _wait(lambda: all(world.first_request_from(g, survivor.host.ip, failed_at) for g in moved), 60,
              "the survivor polling every bus of the cut and the killed host")
        takeover = {g: world.first_request_from(g, survivor.host.ip, failed_at) - failed_at for g in moved}
        slack = 2.0  # process scheduling on a shared, loaded machine
        assert max(takeover.values()) <= bound + slack, (
            f"buses polled again {max(takeover.values()):.1f} s after the failure; the bound is "
            f"TTL {TTL_S} + renewal {RENEW_S:.1f} + interval {INTERVAL_S} = {bound:.1f} s (+{slack} s): {takeover}")
        print(f"takeover after the failure (s, bound {bound:.1f}): "
              f"{ {g: round(t, 1) for g, t in sorted(takeover.items())} }")
        def unread() -> list[tuple[int, Any]]:
            latest = {m: world.latest_reading(m) for g in moved for m in world.meters[g]}
            return [(m, ts) for m, ts in latest.items() if ts is None or ts.timestamp() <= failed_at]

        try:
            _wait(lambda: not unread(), 30, "readings of every moved meter stored")
        except AssertionError as err:
            raise AssertionError(f"{err}: {unread()} (failed at {failed_at}); survivor's log:\n"
                                 f"{survivor.log()[-4000:]}") from None
        commands.join(200)
        assert not commands.is_alive(), "relay commands did not finish"

        # 3. Heal the cut host: its collector rejoins and takes its share back from the survivor.
        healed_at = time.time()
        cut.host.heal()
        now_share = leases.assign([cut.member, survivor.member], world.gateway_ids)
        back = [g for g in world.gateway_ids if now_share[g] == cut.member]
        assert back, f"rendezvous gives the healed collector nothing of {now_share}"
        _wait(lambda: world.owners() == now_share, 120, f"the healed collector holding its share {back}")
        _wait(lambda: all(world.first_request_from(g, cut.host.ip, healed_at) for g in back), 30,
              "the healed host polling its buses again")
        time.sleep(INTERVAL_S)
    finally:
        sim_report = world.report() if report.exists() else {}
        logs = {c.host.name: c.log()[-3000:] for c in collectors}
        for c in collectors:
            c.host.stop_all()

    print(f"masters per bus: { {p: len(d['masters']) for p, d in sim_report.items()} }; commands: {results}")
    # No two masters on any bus at any moment, over the whole run.
    overlaps = {port: data["overlaps"] for port, data in sim_report.items() if data["overlaps"]}
    assert not overlaps, f"overlapping masters: {overlaps}\n{logs}"
    # Each relay command confirmed once, and the meters show it.
    assert set(results.values()) == {"confirmed"}, (results, logs)
    with app.app_context(), service_session() as s:
        confirmations = dict(s.execute(text(
            "SELECT object_id, count(*) FROM audit_log WHERE action = 'command.confirmed' AND object_type = 'command' "
            "AND object_id = ANY(:ids) GROUP BY object_id"), {"ids": [str(c) for c in results]}).all())
        assert confirmations == {str(c): 1 for c in results}, confirmations
        twice = s.execute(text("SELECT meter_id, ts, count(*) FROM readings WHERE meter_id = ANY(:m) "
                               "GROUP BY meter_id, ts HAVING count(*) > 1"),
                          {"m": [m for ms in world.meters.values() for m in ms]}).all()
        assert twice == [], f"readings stored twice: {twice}"
        relay_of = {m: (g, unit) for g, ms in world.meters.items() for unit, m in enumerate(ms, 1)}
        for meter_id in relay_meters:
            gateway_id, unit = relay_of[meter_id]
            assert sim_report[str(world.port_of[gateway_id])]["relays"][str(unit)] is False, meter_id
    os.kill(sim.pid, signal.SIGTERM)
