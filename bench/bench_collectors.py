"""Collector scaling: meters read per second by 1, 2 and 3 ``Collector`` processes on the same simulated buses.

    python -m bench.bench_collectors [--buses 300] [--sim-procs 2] [--window 20]

The real collector service (``meterhub.collector.service.Collector``): members of one fleet in a throwaway
database, gateways spread by rendezvous hashing over bus leases in PostgreSQL, readings stored through the
StorageSink, jobs and heartbeats in Redis. The simulated buses (32 DTSD1352 meters each) run on a fast line
(115200 baud, 2 ms turnaround) so that one collector process, not the lines, is the limit; every bus polls
continuously (interval 0.5 s). For each process count the previous collectors are stopped (their leases are
released), the new ones start, and once every bus is held by the member rendezvous hashing names, good reads
are counted over ``--window`` seconds. Simulators, collectors and PostgreSQL share this machine's cores (the
load average is recorded), so the ratio is what this machine gives, not what separate hosts would.
Results merged into bench/results.json under ``collector_scaling``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import threading
import time
import uuid
from typing import Any

import redis
from sqlalchemy import create_engine, text

from meterhub.aio import run_loop
from meterhub.simulator import LineTiming, SimClock, SimServer

from .common import BENCH_INSTANCE, print_table, throwaway_database, write_results

log = logging.getLogger("bench.collectors")
METERS = 32
FAST_LINE = LineTiming(115200, char_bits=11, turnaround=0.002)
REDIS_URL = "redis://127.0.0.1:6379/0"


def _sim_process(count: int, seed: int, ports: Any, stop: Any) -> None:
    async def serve() -> None:
        from meterhub.plugins import driver_registry, new_plugin_manager

        driver, clock = driver_registry(new_plugin_manager())["acrel_dtsd1352"], SimClock(acceleration=0.0)
        servers = []
        for b in range(count):
            sims = [driver.simulator(u, {}, clock=clock, seed=seed + b * 100 + u) for u in range(1, METERS + 1)]
            servers.append(await SimServer(sims, framing="rtu", line=FAST_LINE).start())
        ports.put([s.port for s in servers])
        while not stop.is_set():
            await asyncio.sleep(0.2)
        for server in servers:
            await server.stop()

    run_loop(serve())


def _collector_process(admin_url: str, namespace: str, stats: Any, stop: Any) -> None:
    """One collector member, configured as ``meterhub collector`` is (an app context: the reading_stored hooks
    run); puts (pid, monotonic time, good reads, buses held) on ``stats`` every 0.5 s."""
    import os

    os.environ.update(METERHUB_DATABASE_URL=admin_url, METERHUB_INSTANCE_PATH=str(BENCH_INSTANCE),
                      METERHUB_REDIS_URL=REDIS_URL, METERHUB_REDIS_NAMESPACE=namespace)
    from meterhub.app import create_app
    from meterhub.collector.service import Collector

    app = create_app()
    app.app_context().push()
    collector = Collector.from_app(app, interval_s=0.5, stagger_s=1.0, reload_s=30.0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        threading.Thread(target=lambda: (stop.wait(), loop.call_soon_threadsafe(collector.request_stop)),
                         daemon=True).start()

        async def report() -> None:
            while not collector.stop_event.is_set():
                stats.put((os.getpid(), time.monotonic(), collector.sink.stats.reads_ok, len(collector.pollers)))
                await asyncio.sleep(0.5)

        reporter = asyncio.create_task(report())
        await collector.run()
        reporter.cancel()

    run_loop(main())


def _fleet(admin_url: str, ports: list[int]) -> list[int]:
    """One group and property; a gateway per simulated port with 32 DTSD1352 devices and meters."""
    engine = create_engine(admin_url)
    with engine.begin() as conn:
        group = conn.execute(text("INSERT INTO groups (name, code, timezone, modules, created_at) "
                                  "VALUES ('Bench', 'bench', 'Asia/Shanghai', '{}', now()) RETURNING id")).scalar()
        prop = conn.execute(text(
            "INSERT INTO properties (group_id, name, code, address, timezone, reading_interval_min, created_at) "
            "VALUES (:g, 'Bench', 'B', '', 'Asia/Shanghai', 30, now()) RETURNING id"), {"g": group}).scalar()
        gateways = []
        for n, port in enumerate(ports):
            gw = conn.execute(text(
                "INSERT INTO gateways (group_id, property_id, name, host, port, framing, bus, enabled, status, "
                "fault_count, created_at) VALUES (:g, :p, :name, '127.0.0.1', :port, 'modbus-rtu-over-tcp', "
                "'{\"timeout\": 0.5}', true, 'unknown', 0, now()) RETURNING id"),
                {"g": group, "p": prop, "name": f"gw{n}", "port": port}).scalar()
            gateways.append(gw)
            conn.execute(text(
                "INSERT INTO devices (group_id, property_id, gateway_id, driver_key, address, serial, config, status, "
                "fault_count, created_at) SELECT :g, :p, :gw, 'acrel_dtsd1352', u::text, :gw || '-' || u, '{}', "
                "'unknown', 0, now() FROM generate_series(1, :m) u"), {"g": group, "p": prop, "gw": gw, "m": METERS})
        conn.execute(text(
            "INSERT INTO meters (group_id, property_id, device_id, channel, utility, name, status, keep_power, active, "
            "created_at) SELECT group_id, property_id, id, 1, 'electricity', '', 'unknown', false, true, now() "
            "FROM devices"))
    engine.dispose()
    return gateways


def _placed(admin_url: str, gateways: list[int], members: int) -> bool:
    """Every bus leased, to ``members`` distinct live collectors, as rendezvous hashing over them says."""
    from meterhub.collector.leases import assign

    engine = create_engine(admin_url)
    with engine.connect() as conn:
        live = [r[0] for r in conn.execute(text(
            "SELECT member_id FROM collector_members WHERE last_seen > now() - interval '15 seconds'"))]
        owners = dict(conn.execute(text("SELECT gateway_id, owner FROM bus_leases WHERE owner IS NOT NULL "
                                        "AND expires_at > now()")).all())
    engine.dispose()
    return len(live) == members and owners == assign(live, gateways)


def run_with(admin_url: str, gateways: list[int], count: int, window_s: float, namespace: str) -> dict[str, Any]:
    stats, stop = mp.Queue(), mp.Event()
    procs = [mp.Process(target=_collector_process, args=(admin_url, namespace, stats, stop), daemon=True)
             for _ in range(count)]
    for proc in procs:
        proc.start()
    try:
        deadline = time.monotonic() + 180
        while not _placed(admin_url, gateways, count):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} collectors did not settle on the rendezvous placement in 180 s")
            time.sleep(0.5)
        time.sleep(3.0)  # the last buses handed over have started polling
        latest: dict[int, tuple[float, int, int]] = {}

        def drain() -> None:
            while not stats.empty():
                pid, at, reads, buses = stats.get()
                latest[pid] = (at, reads, buses)

        drain()
        first = dict(latest)
        time.sleep(window_s)
        drain()
        rates = {pid: (latest[pid][1] - first[pid][1]) / (latest[pid][0] - first[pid][0])
                 for pid in latest if pid in first and latest[pid][0] > first[pid][0]}
        buses = {pid: latest[pid][2] for pid in latest}
    finally:
        stop.set()
        for proc in procs:
            proc.join(60)
    return {"collectors": count, "meters_per_s": sum(rates.values()),
            "per_process": [round(r) for r in rates.values()], "buses_per_process": sorted(buses.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buses", type=int, default=300)
    parser.add_argument("--sim-procs", type=int, default=2)
    parser.add_argument("--window", type=float, default=20.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    logging.getLogger("bench").setLevel(logging.INFO)
    ports_q, stop = mp.Queue(), mp.Event()
    shares = [args.buses // args.sim_procs + (i < args.buses % args.sim_procs) for i in range(args.sim_procs)]
    sims = [mp.Process(target=_sim_process, args=(n, 1000 * i, ports_q, stop), daemon=True)
            for i, n in enumerate(shares) if n]
    for sim in sims:
        sim.start()
    rows = []
    namespace = f"bench-collectors-{uuid.uuid4().hex[:6]}"
    try:
        ports = [p for _ in sims for p in ports_q.get(timeout=300)]
        with throwaway_database() as admin_url:
            gateways = _fleet(admin_url, ports)
            for count in (1, 2, 3):
                rows.append(run_with(admin_url, gateways, count, args.window, namespace))
                log.info("%d collector(s): %.0f meters/s", count, rows[-1]["meters_per_s"])
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{namespace}:*", count=1000):
            client.delete(key)
        stop.set()
        for sim in sims:
            sim.join(10)
    one = rows[0]["meters_per_s"] or 1.0
    for row in rows:
        row["scaling"] = round(row["meters_per_s"] / one, 2)
    print_table(f"Collector processes on the same {args.buses} buses x {METERS} meters (fail-over leases, storage)",
                [{k: v for k, v in r.items() if k != "per_process"} for r in rows])
    write_results("collector_scaling", {
        "buses": args.buses, "meters": args.buses * METERS, "line": "115200 baud, 2 ms turnaround, continuous",
        "window_s": args.window, "runs": rows})


if __name__ == "__main__":
    main()
