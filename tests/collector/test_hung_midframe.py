"""Issue 22: a gateway that stops answering in the middle of a reply frame while a command waits on its bus.

A proxy in front of the simulated meter passes the first bytes of each reply and then nothing (the connection
stays open: a serial converter whose meter side died mid-frame). The collector's transaction times out, the
command job is answered (the command waits for a retry, never stuck ``sent``), the meter goes offline by the
offline check, and when the meter answers again it is read, online again, and the command is confirmed; the
bus lease is held only by the live collector and released when it stops (no stuck lease).
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta

from sqlalchemy import text

from meterhub.collector.jobs import bus_owner
from meterhub.commands import worker
from meterhub.commands.models import Command
from meterhub.commands.service import create_command
from meterhub.db import service_session
from meterhub.devices.models import Meter
from meterhub.models import utcnow
from meterhub.timeseries.health import detect_offline
from tests.collector.test_commands_via_collector import PrepaidBus, _point
from tests.collector.test_service import Running, _collector, _wait


class MidFrameProxy:
    """TCP proxy to the simulator; while ``hung`` each reply stops after its first ``keep`` bytes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, target_port: int, keep: int = 3) -> None:
        self.loop, self.target_port, self.keep = loop, target_port, keep
        self.hung = False
        self.cut = 0  # replies cut short
        self.server = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._serve, "127.0.0.1", 0), loop).result(5)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, replies: bool) -> None:
            try:
                while data := await src.read(4096):
                    if replies and self.hung:
                        self.cut += 1
                        data = data[:self.keep]  # the start of the frame, then silence
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))

    def close(self) -> None:
        self.server.close()


def _state(app, command_id: int) -> Command:
    with app.app_context(), service_session() as s:
        return s.get(Command, command_id)


def _meter_status(app, meter_id: int) -> str:
    with app.app_context(), service_session() as s:
        return s.get(Meter, meter_id).status


def _readings(app, meter_id: int) -> int:
    with app.app_context(), service_session() as s:
        return s.execute(text("SELECT count(*) FROM readings WHERE meter_id = :m"), {"m": meter_id}).scalar()


def test_a_gateway_hung_mid_frame_times_out_goes_offline_and_recovers_without_a_stuck_lease(app, group):
    bus = PrepaidBus()
    proxy = MidFrameProxy(bus.loop, bus.server.port)
    try:
        meter_id = _point(app, group, proxy.port)  # the gateway's bus timeout is 0.3 s
        collector = _collector(app, group, interval_s=0.5)
        with Running(collector), app.app_context():
            _wait(lambda: bus_owner(group.gateway_id) is not None and _readings(app, meter_id) >= 1, timeout=30)
            owner = bus_owner(group.gateway_id)

            proxy.hung = True
            hung_at = utcnow()
            with service_session() as s:
                command_id = create_command(s, s.get(Meter, meter_id), "switch", {"closed": False}).id
            outcome: dict[str, str] = {}
            job = threading.Thread(target=lambda: outcome.setdefault("state", _execute(app, command_id)))
            started = time.monotonic()
            job.start()
            job.join(60)
            assert not job.is_alive(), "the command job hangs with its bus"
            assert proxy.cut >= 1, "no reply was cut mid-frame"
            command = _state(app, command_id)
            assert outcome["state"] == command.state == "queued" and command.attempts == 1, command.state
            assert command.error, "the timeout is recorded on the command"
            # the request reached the meter (its relay may have opened); only the answer was lost: not confirmed
            took = time.monotonic() - started

            readings = _readings(app, meter_id)
            time.sleep(1.5)  # polls go on timing out; nothing is stored from a cut frame
            assert _readings(app, meter_id) == readings
            with service_session() as s:  # the offline check (a 1 s window here) marks the silent meter offline
                detect_offline(s, utcnow(), window=timedelta(seconds=1))
            assert _meter_status(app, meter_id) == "offline"
            assert bus_owner(group.gateway_id) == owner, "the live collector keeps its bus through the hang"

            proxy.hung = False  # the meter answers again
            _wait(lambda: _readings(app, meter_id) > readings, timeout=30)
            with service_session() as s:
                detect_offline(s, utcnow(), window=timedelta(seconds=30))
            assert _meter_status(app, meter_id) == "online"
            assert _execute(app, command_id) == "confirmed"  # its retry, now the meter answers
            assert not bus.sim.channel.relay_closed
            assert utcnow() - hung_at < timedelta(minutes=2) and took < 60
        with app.app_context():
            _wait(lambda: bus_owner(group.gateway_id) is None, timeout=30)  # released with the collector
    finally:
        proxy.close()
        bus.close()


def _execute(app, command_id: int) -> str:
    with app.app_context():
        return worker.execute(command_id)
