"""The collector recovers by itself: a bus whose every device failed is read again within an interval of
coming back, a sink that is full postpones cycles (nothing taken is dropped), quarantine stays near an interval."""

from __future__ import annotations

import asyncio

from meterhub.collector.bus import NullSink
from meterhub.collector.policy import Quarantine
from meterhub.simulator import Faults
from tests.collector.conftest import poller, start_bus, until


def test_a_bus_whose_devices_all_failed_is_read_again_soon_after_it_comes_back(run):
    async def go():
        server, proxy = await start_bus([1, 2, 3], faults=Faults(dead={1, 2, 3}))
        sink = NullSink()
        bus = poller(proxy, [1, 2, 3], sink, interval_s=0.2, timeout_s=0.05, quarantine_s=30, retries=0)
        task = asyncio.create_task(bus.run())
        await until(lambda: all(bus.quarantine.failures(d) >= 1 for d in (1, 2, 3)), timeout=5)
        assert all(bus.quarantine.active(d, bus.clock()) for d in (1, 2, 3))  # 30 s each, far beyond 0.2 s
        server.faults.dead.clear()  # the gateway answers again (as after SIGCONT)
        reports = len(sink.reports)
        await until(lambda: any(r.read == 3 for r in sink.reports[reports:]), timeout=2)
        assert not any(bus.quarantine.active(d, bus.clock()) for d in (1, 2, 3))
        bus.stop()
        await task
        await proxy.down()
        await server.stop()

    run(go())


def test_a_full_sink_postpones_cycles_instead_of_dropping(run):
    class FullSink(NullSink):
        full = True

        def accepting(self) -> bool:
            return not self.full

    async def go():
        server, proxy = await start_bus([1, 2])
        sink = FullSink()
        bus = poller(proxy, [1, 2], sink, interval_s=0.05)
        task = asyncio.create_task(bus.run())
        await asyncio.sleep(0.3)
        assert sink.outcomes == 0 and bus.alive_at > 0  # no reading taken while the buffer is full
        sink.full = False
        await until(lambda: sink.outcomes >= 2, timeout=3)
        bus.stop()
        await task
        await proxy.down()
        await server.stop()

    run(go())


def test_quarantine_is_capped_near_the_interval():
    q = Quarantine(base_s=30, max_s=900)
    q.max_s = min(q.max_s, max(60.0, q.base_s))  # what a poller with a 60 s interval does
    spans = [q.failed(7, 0.0) for _ in range(5)]
    assert spans == [30, 60, 60, 60, 60]
    q.release_all()
    assert not q.active(7, 0.1) and q.failures(7) == 5  # tried again now; a still dead device backs off again
