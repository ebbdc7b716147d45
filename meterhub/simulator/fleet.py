"""A simulated fleet: N gateways (one bus each) with M devices each, plus its onboarding file.

    fleet = Fleet(registry, gateways=2, devices=3, drivers=["acrel_dtsd1352"], base_port=15020)
    await fleet.start(); fleet.onboarding() -> dict; await fleet.stop()

Onboarding file (JSON, ``format: meterhub-onboarding/1``; the .xlsx variant has sheets ``gateways`` and
``devices`` with the same columns, ``bus``/``config`` flattened as JSON text)::

    {"format": "meterhub-onboarding/1",
     "gateways": [{"name": "sim-gw-1", "host": "127.0.0.1", "port": 15020, "framing": "rtu" | "tcp" | "cjt188",
                   "bus": {"baud": 9600, "parity": "N", "stop_bits": 1, "line_timing": false}}],
     "devices":  [{"gateway": "sim-gw-1", "driver": "acrel_dtsd1352", "address": 1 | "12345678",
                   "serial": "002300007920", "channels": 1, "config": {...}}]}

With ``installed``, every meter starts with the counters of a meter that has run on its noise-free load profile
since ``PROFILE_EPOCH`` (not at zero, as a meter in a building never is), and each device entry also lists its
channels' profiles (``"profile": [{"base_kw": 2.1}, …]``): with :func:`meterhub.simulator.model.profile_energy`
they give any past counter value of the meter, which is how the demo fills in its history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from meterhub.simulator.model import SimClock
from meterhub.simulator.server import Faults, LineTiming, SimServer

FORMAT = "meterhub-onboarding/1"
MAX_PORT = 32767


class Fleet:
    """Simulated gateways on consecutive ports from ``base_port`` (0 = any free ports)."""

    def __init__(self, registry: dict[str, Any], gateways: int = 1, devices: int = 1,
                 drivers: list[str] | None = None, base_port: int = 0, host: str = "127.0.0.1",
                 line_timing: bool = False, acceleration: float = 1.0, seed: int = 1,
                 faults: Faults | None = None, installed: bool = False, first_gateway: int = 1) -> None:
        keys = drivers or sorted(registry)
        unknown = [k for k in keys if k not in registry]
        if unknown:
            raise ValueError(f"unknown driver(s) {', '.join(unknown)}; known: {', '.join(sorted(registry))}")
        if base_port and base_port + gateways - 1 > MAX_PORT:
            raise ValueError(f"ports {base_port}..{base_port + gateways - 1} must stay below 32768")
        self.registry, self.host, self.clock = registry, host, SimClock(acceleration=acceleration)
        self.installed = installed
        self.servers: list[SimServer] = []
        self.gateways: list[dict[str, Any]] = []
        self.devices: list[dict[str, Any]] = []
        used: set[tuple[str, str]] = set()  # (driver, serial): a serial is unique per driver, as onboarding requires
        for g in range(gateways):
            key = keys[g % len(keys)]
            number = first_gateway + g  # the bus's number across fleets: names, seeds and addresses follow it
            driver = registry[key]
            example = driver.examples()[0]
            config = driver.validate_config(example["config"])
            framing = example.get("framing", "rtu")
            line = driver.manifest.get("line_defaults", {"baud": 9600, "parity": "N", "stop_bits": 1})
            name = f"sim-gw-{number}"
            sims = []
            self._bus_addresses: set[int] = set()
            span = driver.channels(config) * (3 if config.get("wiring") == "three" else 1)
            for d in range(devices):
                if framing == "cjt188":
                    address: Any = f"{10000001 + (number - 1) * 1000 + d}"
                else:
                    address = 1 + d * max(span if key == "acrel_adf300" else 1, 1)
                    if address + span - 1 > 247:
                        raise ValueError(f"{devices} {key} devices do not fit in slave ids 1..247 on one bus")
                sim = driver.simulator(address, config, clock=self.clock, seed=seed + (number - 1) * 100 + d)
                sim, address = self._distinct(driver, key, config, sim, address, used, number, seed + d)
                used.add((key, str(getattr(sim, "serial", address))))
                if not isinstance(address, str):
                    self._bus_addresses.add(address)
                sims.append(sim)
                device = {"gateway": name, "driver": key, "address": address,
                          "serial": getattr(sim, "serial", str(address)),
                          "channels": driver.channels(config), "config": driver.mask_config(config)}
                if installed:
                    now = self.clock.now()
                    for channel in sim.meter_channels():
                        channel.install(now)
                    device["profile"] = [channel.profile() for channel in sim.meter_channels()]
                self.devices.append(device)
            timing = LineTiming(int(line.get("baud", 9600))) if line_timing and framing != "tcp" else None
            port = base_port + g if base_port else 0
            self.servers.append(SimServer(sims, framing=framing, host=host, port=port, line=timing,
                                          faults=faults, di_order=config.get("di_order", "low_first")))
            self.gateways.append({"name": name, "host": host, "port": port, "framing": framing,
                                  "bus": {**line, "line_timing": bool(timing)}})

    def _distinct(self, driver: Any, key: str, config: dict[str, Any], sim: Any, address: Any,
                  used: set[tuple[str, str]], number: int, seed: int) -> tuple[Any, Any]:
        """A device whose serial no earlier device of this fleet has. A device whose identity is its slave id alone
        (DTSD1352 has no serial register) moves to a free slave id: past the ids the fleet's earlier buses use,
        and on a bus numbered above 1 (``first_gateway``, another process) past the ids a bus 1 would use."""
        if isinstance(address, str):
            return sim, address
        by_address = str(getattr(driver.simulator(address, config, clock=self.clock, seed=seed + 7), "serial",
                                 address)) == str(getattr(sim, "serial", address))
        if not by_address or ((key, str(getattr(sim, "serial", address))) not in used and number == 1):
            return sim, address
        start = max([address] + [int(s.rsplit("-", 1)[-1]) + 1 for k, s in used
                                 if k == key and s.rsplit("-", 1)[-1].isdecimal()])
        if number > 1:
            start = max(start, address + 50 * (number - 1))
        for candidate in range(start, 248):
            if candidate in self._bus_addresses:
                continue
            moved = driver.simulator(candidate, config, clock=self.clock, seed=seed)
            if (key, str(getattr(moved, "serial", candidate))) not in used:
                return moved, candidate
        raise ValueError(f"no free slave id for another {key} on gateway sim-gw-{number}: use fewer devices")

    async def start(self) -> Fleet:
        for server, gateway in zip(self.servers, self.gateways):
            await server.start()
            gateway["port"] = server.port
        return self

    async def stop(self) -> None:
        for server in self.servers:
            await server.stop()

    def onboarding(self) -> dict[str, Any]:
        data = {"format": FORMAT, "gateways": self.gateways, "devices": self.devices}
        if self.installed:
            data["installed_at"] = self.clock.start.isoformat()  # device time the installed counters are of
        return data

    def write_onboarding(self, path: str | Path) -> Path:
        """Write the onboarding file as JSON, or as .xlsx when the name ends so."""
        path = Path(path)
        data = self.onboarding()
        if path.suffix.lower() == ".xlsx":
            from ..spreadsheets import append_row, new_workbook

            book = new_workbook()
            sheet = book.create_sheet("gateways")
            append_row(sheet, ["name", "host", "port", "framing", "bus"])
            for gw in data["gateways"]:
                append_row(sheet, [gw["name"], gw["host"], gw["port"], gw["framing"], json.dumps(gw["bus"])])
            sheet = book.create_sheet("devices")
            append_row(sheet, ["gateway", "driver", "address", "serial", "channels", "config"])
            for dev in data["devices"]:
                append_row(sheet, [dev["gateway"], dev["driver"], str(dev["address"]), dev["serial"], dev["channels"],
                                   json.dumps(dev["config"])])
            book.save(path)
        else:
            path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
        return path
