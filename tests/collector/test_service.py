"""The collector process against PostgreSQL and Redis: loading, sharding, storage, read-now, alarms."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import text

from meterhub.collector import Collector, Shard, request_read_now, wait_read_now
from meterhub.collector.service import load_buses
from meterhub.db import service_engine, service_session
from meterhub.simulator import Faults, LineTiming, SimServer
from tests.collector.conftest import REGISTRY, sims


def _add_gateways(app, group, count: int) -> list[int]:
    from meterhub.devices.onboarding import DeviceSpec, create_gateway, onboard_device
    from meterhub.tenants.models import Property

    ids = []
    with app.app_context(), service_session() as s:
        prop = s.get(Property, group.property_id)
        for i in range(count):
            gw = create_gateway(s, prop, f"shard-{group.marker}-{i}", "127.0.0.1", 1502, "modbus-rtu-over-tcp")
            onboard_device(s, gw, DeviceSpec("acrel_dtsd1352", 1, f"S{group.marker[-8:]}{i}", {}), verify=False)
            ids.append(gw.id)
    return ids


def test_shards_split_the_gateways(app, group):
    ids = set(_add_gateways(app, group, 5)) | {group.gateway_id}
    seen: list[set[int]] = []
    with app.app_context(), service_session() as s:
        for index in range(3):
            buses = load_buses(s, Shard(index, 3), REGISTRY, only=ids)
            assert all(gid % 3 == index for gid in buses)
            seen.append(set(buses))
    assert set().union(*seen) == ids and sum(map(len, seen)) == len(ids)
    assert Shard.parse("2/4") == Shard(2, 4) and Shard.parse(None) == Shard(0, 1)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(ValueError):
            Shard.parse(bad)


def test_cli_rejects_a_bad_shard(runner):
    from meterhub.collector import collector_command

    result = runner.invoke(collector_command, ["--shard", "5/2"])
    assert result.exit_code != 0 and "--shard" in result.output


class Running:
    """A collector in a background thread with its own event loop."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(collector.run(),), daemon=True)

    def __enter__(self) -> Collector:
        self.thread.start()
        return self.collector

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.collector.request_stop)
        self.thread.join(15)
        assert not self.thread.is_alive()
        self.loop.close()


class SimThread:
    """A simulated bus served from its own thread and event loop."""

    def __init__(self, **kwargs: object) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = SimServer(sims([1, 2]), framing="rtu", **kwargs)
        self.loop.run_until_complete(self.server.start())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> SimServer:
        self.thread.start()
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def _point_gateway(app, group, port: int, bus: dict | None = None) -> tuple[int, int]:
    from meterhub.devices.onboarding import DeviceSpec, onboard_device
    from meterhub.devices.models import Gateway, Meter

    with app.app_context(), service_session() as s:
        gw = s.get(Gateway, group.gateway_id)
        gw.port, gw.bus = port, bus or {"timeout": 0.2}
        dead = onboard_device(s, gw, DeviceSpec("acrel_dtsd1352", 2, f"D{group.marker[-8:]}", {}), verify=False)
        meter_id = s.execute(text("SELECT id FROM meters WHERE device_id = :d"), {"d": group.device_id}).scalar()
        assert s.get(Meter, meter_id) is not None
        return meter_id, dead.id


def _collector(app, group, **kwargs) -> Collector:
    return Collector(engine=service_engine(app.config["SERVICE_DATABASE_URL"]), redis_url=app.config["REDIS_URL"],
                     namespace=app.config["REDIS_NAMESPACE"], registry=REGISTRY, only={group.gateway_id},
                     stagger_s=0, flush_s=0.2, **kwargs)


def test_collector_stores_readings_counts_faults_and_reads_now(app, group):
    with SimThread(faults=Faults(dead={2})) as server:
        meter_id, dead_id = _point_gateway(app, group, server.port)
        with Running(_collector(app, group, interval_s=3600)) as collector, app.app_context():
            _wait(lambda: collector.sink.stats.readings_stored >= 1 and collector.sink.stats.reads_failed >= 1)
            rid = request_read_now([meter_id, 999_999_999])
            result = wait_read_now(rid, timeout=5)
            assert result.complete
            assert result.meters[meter_id]["ok"] and "energy_kwh" in result.meters[meter_id]["values"]
            assert not result.meters[999_999_999]["ok"]
            _wait(lambda: collector.sink.stats.readings_stored >= 2)
        with app.app_context(), service_session() as s:
            sources = s.execute(text("SELECT source FROM readings WHERE meter_id = :m ORDER BY ts"),
                                {"m": meter_id}).scalars().all()
            assert sources == ["poll", "readnow"]
            dev = s.execute(text("SELECT status, last_seen_at, fault_count FROM devices WHERE id = :d"),
                            {"d": group.device_id}).one()
            assert dev.status == "online" and dev.last_seen_at is not None and dev.fault_count == 0
            dead = s.execute(text("SELECT status, fault_count FROM devices WHERE id = :d"), {"d": dead_id}).one()
            assert dead.fault_count == 3 and dead.status != "online"  # 1 try + 2 retries, then quarantined
            gw = s.execute(text("SELECT status, last_seen_at, fault_count FROM gateways WHERE id = :g"),
                           {"g": group.gateway_id}).one()
            assert gw.status == "online" and gw.fault_count == 3
            events = s.execute(text("SELECT object_type, event FROM health_events WHERE group_id = :g"),
                               {"g": group.group_id}).all()
            assert ("device", "online") in events and ("gateway", "online") in events


def test_cycle_overrun_is_recorded_as_a_health_event(app, group):
    with SimThread(line=LineTiming(9600, turnaround=0.02)) as server:
        _point_gateway(app, group, server.port, {"timeout": 0.5, "pause_ms": 5})
        with Running(_collector(app, group, interval_s=0.2)) as collector:
            _wait(lambda: collector.sink.stats.cycle_overruns >= 1)
            _wait(lambda: not collector.sink.pending.overruns and collector.sink.stats.cycles >= 2)
        with app.app_context(), service_session() as s:
            rows = s.execute(text("SELECT detail FROM health_events WHERE object_id = :g AND event = 'cycle_overrun'"),
                             {"g": group.gateway_id}).scalars().all()
        assert rows and rows[0]["duration_s"] > rows[0]["interval_s"] == 0.2


def _wait(predicate, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)
