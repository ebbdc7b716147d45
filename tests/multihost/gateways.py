"""Simulated gateways for the multi-host tests, run as a process inside a "gateway host" namespace.

    python -m tests.multihost.gateways --host 10.231.n.10 --buses 6 --devices 3 --report /tmp/x.json

One RTU bus (``SimServer``, its own port) per gateway with ``devices`` prepaid DTSY1352 meters (unit 1..n), line
timing of 9600 baud. Every 0.3 s the report file is rewritten (atomically) with, per port: transactions,
every master (peer, first/last wall-clock time, requests), the overlapping master pairs and the relay state
of each meter. SIGTERM ends it after a last report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from pathlib import Path

from meterhub.plugins import driver_registry, new_plugin_manager
from meterhub.simulator import LineTiming, SimClock, SimServer


def report(servers: list[SimServer], path: Path) -> None:
    data = {}
    for server in servers:
        data[str(server.port)] = {
            "transactions": server.transactions,
            "masters": [[m.peer, m.first, m.last, m.requests] for m in server.masters],
            "overlaps": [[a.peer, b.peer, a.first, a.last, b.first, b.last] for a, b in server.overlapping_masters()],
            "relays": {str(d.unit_ids[0]): bool(d.channel.relay_closed) for d in server.devices},
        }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


async def main(host: str, buses: int, devices: int, path: Path) -> None:
    driver = driver_registry(new_plugin_manager())["acrel_dtsd1352"]
    clock = SimClock(acceleration=0.0)
    servers = []
    for _ in range(buses):
        sims = [driver.simulator(unit, {"variant": "dtsy1352"}, clock=clock) for unit in range(1, devices + 1)]
        servers.append(await SimServer(sims, framing="rtu", host=host, line=LineTiming(9600, turnaround=0.005)).start())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        report(servers, path)
        try:
            await asyncio.wait_for(stop.wait(), 0.3)
        except TimeoutError:
            pass
    report(servers, path)
    for server in servers:
        await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--buses", type=int, default=6)
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.buses, args.devices, args.report))
