"""Issue 21 item 8 with a simulated meter: a switch-off that failed while the gateway was offline says it waits
for the meter, and is carried out when the meter answers again, although its relay state was never known."""

from __future__ import annotations

from sqlalchemy import select

from meterhub.commands import worker
from meterhub.commands.models import Command
from meterhub.commands.outlook import outlook
from meterhub.commands.service import create_command
from meterhub.db import service_session
from meterhub.devices.models import Gateway, Meter
from meterhub.models import utcnow
from meterhub.modules.prepaid import control
from meterhub.timeseries.ingest import Reading, ingest
from tests.collector.test_commands_via_collector import PrepaidBus, _point


def closed_port() -> int:
    """A local TCP port nobody listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _relay_commands(s, meter_id: int) -> list[Command]:
    return list(s.execute(select(Command).where(Command.meter_id == meter_id, Command.kind == "switch")
                          .order_by(Command.id)).scalars())


def test_a_kept_switch_off_waits_for_the_meter_then_is_applied_though_its_relay_was_never_known(app, group):
    bus = PrepaidBus()
    try:
        meter_id = _point(app, group, bus.server.port)
        with app.app_context():
            with service_session() as s:
                s.get(Gateway, group.gateway_id).port = closed_port()  # the gateway is offline
                meter = s.get(Meter, meter_id)
                assert meter.relay_closed is None and meter.relay_desired is None  # never known (no account yet)
                command = control.set_desired(s, meter, False, actor="op", source="operator", force=True)
                command.max_attempts = 1
                first = command.id
            assert worker.execute(first) == "failed"
            with service_session() as s:
                failed = s.get(Command, first)
                assert failed.state == "failed" and failed.error
                notes = {k: str(v) for k, v in outlook(s, [failed]).items()}
                assert notes == {first: "waiting for the meter to come back — will switch off when it does"}
                assert s.get(Meter, meter_id).relay_desired is False  # the desired state is kept
                s.get(Gateway, group.gateway_id).port = bus.server.port  # the gateway is back
            assert bus.sim.channel.relay_closed  # still drawing power
            # the meter answers a poll; its reading carries no relay state
            ingest([Reading(group.group_id, meter_id, utcnow().replace(microsecond=0), {"energy_kwh": 12.5})])
            with service_session() as s:
                again = _relay_commands(s, meter_id)[-1]
                assert again.id != first and again.state == "queued" and again.params == {"closed": False}
                assert again.verify_first  # read the meter, then act
            assert worker.execute(again.id) == "confirmed"
            assert not bus.sim.channel.relay_closed  # switched off at last
            with service_session() as s:
                assert s.get(Meter, meter_id).relay_closed is False
                assert outlook(s, [s.get(Command, first)]) == {}  # superseded: no longer "waiting"
            ingest([Reading(group.group_id, meter_id, utcnow().replace(microsecond=0), {"energy_kwh": 12.6})])
            with service_session() as s:
                assert len(_relay_commands(s, meter_id)) == 2  # applied once, not again on every reading
                read = create_command(s, s.get(Meter, meter_id), "read_now", {}).id
            assert worker.execute(read) == "confirmed"
            with service_session() as s:  # the reading is shown with the command once it arrived
                note = str(outlook(s, [s.get(Command, read)])[read])
                assert note.startswith("read: ") and "kWh" in note, note
    finally:
        bus.close()
