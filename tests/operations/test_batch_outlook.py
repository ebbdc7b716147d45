"""Issue 21 items 1 and 8 on a batch's page: read now over a selection shows each meter's reading once it
arrived; a switch-off that failed while the meter was away reads "waiting for the meter to come back"."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

from sqlalchemy import select, text

from meterhub.commands.models import Command
from meterhub.commands.worker import execute
from meterhub.db import service_session
from meterhub.devices.models import Device, Meter
from meterhub.modules.batch.models import BatchItem
from meterhub.modules.batch.service import create_batch, start_batch
from tests.operations.test_batch import Bus


class ReadingDevices:
    """Every device answers a read with its channel 1 at 1234.5 kWh."""

    def supports(self, command, config) -> bool:
        return True

    async def read(self, transport, device):
        return [SimpleNamespace(channel=1, timestamp=datetime(2026, 3, 1, tzinfo=UTC),
                                values={"energy_kwh": Decimal("1234.5")})]


def _batch(site, action: str) -> int:
    with site.app.app_context(), service_session() as s:
        for m in site.meters:
            s.get(Device, s.get(Meter, m).device_id).config = {"variant": "dtsy1352"}
        # the switch-ons queued when the accounts were opened and topped up are done
        s.execute(text("UPDATE commands SET state = 'confirmed' WHERE meter_id = ANY(:m) AND state IN "
                       "('queued', 'sent')"), {"m": site.meters})
        batch = create_batch(s, site.group_id, site.property_id, action, {}, {"meter_ids": site.meters}, actor="amy")
        start_batch(s, batch)
        return batch.id


def _commands(site, batch_id: int) -> list[int]:
    with site.app.app_context(), service_session() as s:
        return list(s.execute(select(BatchItem.command_id).where(BatchItem.batch_id == batch_id)
                              .order_by(BatchItem.id)).scalars())


def test_read_now_batch_shows_each_reading_and_a_failed_switch_off_waits(site, client, operator):
    operator("group_admin")
    read = _batch(site, "read_now")
    with site.app.app_context():
        for command_id in _commands(site, read):
            assert execute(command_id, registry={"acrel_dtsd1352": ReadingDevices()},
                           transport_factory=lambda gw: Bus()) == "confirmed"
    page = html.unescape(client.get(f"/batch/{read}").get_data(as_text=True))
    assert page.count("read: 1234.5 kWh") == len(site.meters), page[-3000:]

    off = _batch(site, "switch_off")
    with site.app.app_context(), service_session() as s:  # the gateway was offline: every attempt failed
        s.execute(text("UPDATE commands SET state = 'failed', error = 'TimeoutError: no answer', attempts = 3 "
                       "WHERE id = ANY(:ids)"), {"ids": _commands(site, off)})
    page = html.unescape(client.get(f"/batch/{off}").get_data(as_text=True))
    assert page.count("waiting for the meter to come back — will switch off when it does") == len(site.meters)
    with site.app.app_context(), service_session() as s:
        assert all(m.relay_desired is False for m in s.execute(select(Meter).where(Meter.id.in_(site.meters)))
                   .scalars())
        assert not s.execute(select(Command).where(Command.id.in_(_commands(site, off)),
                                                   Command.state != "failed")).first()


def test_starting_a_batch_answers_what_was_done_to_how_many_meters_where(site, client, operator):
    from tests.conftest import csrf_token

    operator("group_admin")
    token = csrf_token(client, "/batch/")
    page = client.post("/batch/new", data={"csrf_token": token, "property_id": site.property_id,
                                           "action": "read_now", "meter_ids": "", "confirmed": "yes"},
                       follow_redirects=True)
    body = html.unescape(page.get_data(as_text=True))
    assert page.status_code == 200 and "started on" in body and "meters of" in body, body[:2000]
    later = client.post("/batch/new", data={"csrf_token": token, "property_id": site.property_id,
                                            "action": "read_now", "meter_ids": "", "at": "2099-01-01T08:00",
                                            "confirmed": "yes"}, follow_redirects=True)
    assert "is scheduled for 2099-01-01 08:00" in html.unescape(later.get_data(as_text=True))
