"""Batch operations: 1,000 meters through the real command layer (PostgreSQL rows, audit, Redis bus lock,
rq for retries) with device faults injected at the driver boundary; per-meter results, retry, export,
schedule and cancel, Excel selection."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from openpyxl import Workbook, load_workbook
from sqlalchemy import func, select

from meterhub.commands.models import Command
from meterhub.commands.worker import execute
from meterhub.db import service_session
from meterhub.devices.models import Device, Meter
from meterhub.errors import ValidationError
from meterhub.i18n import shown
from meterhub.models import utcnow
from meterhub.modules.batch.export import results_xlsx
from meterhub.modules.batch.models import Batch, BatchItem
from meterhub.modules.batch.selection import keys_from_excel
from meterhub.modules.batch.service import cancel_batch, create_batch, progress, retry_failed, start_batch, sync_batch, tick
from meterhub.tenants.audit import AuditEntry
from tests.prepaid.conftest import add_meters


class FaultyDevices:
    """The device side: every 10th device times out every time, every 25th only on its first attempt."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.healed = False

    def supports(self, command, config) -> bool:
        return True

    async def switch(self, transport, device, channel, closed) -> None:
        n = self.calls[device.address] = self.calls.get(device.address, 0) + 1
        index = int(device.address)
        if not self.healed and index % 10 == 0:
            raise TimeoutError(f"no answer from device {index}")
        if index % 25 == 0 and n == 1:
            raise ConnectionResetError("gateway dropped the connection")


class Bus:
    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        return None


def run_queued(app, batch_id: int, devices: FaultyDevices, limit: int | None = None) -> int:
    with app.app_context(), service_session() as s:
        ids = list(s.execute(select(Command.id).join(BatchItem, BatchItem.command_id == Command.id)
                             .where(BatchItem.batch_id == batch_id, Command.state == "queued")
                             .order_by(Command.id).limit(limit)).scalars())
    with app.app_context():
        for command_id in ids:
            execute(command_id, registry={"acrel_dtsd1352": devices}, transport_factory=lambda gw: Bus())
    return len(ids)


@pytest.fixture()
def fleet(site):
    with site.app.app_context(), service_session() as s:
        meters = add_meters(s, site.group_id, site.property_id, site.gateway_id, None, 1000)
        for m in site.meters:
            s.get(Device, s.get(Meter, m).device_id).config = {"variant": "dtsy1352"}
        for i, meter_id in enumerate(meters, start=1):
            meter = s.get(Meter, meter_id)
            device = s.get(Device, meter.device_id)
            device.address = str(i)
            device.config = {} if i % 500 == 3 else {"variant": "dtsy1352"}  # 2 meters without a relay
            meter.keep_power = i % 200 == 7  # 5 meters on keep-power: skipped for switch-off
    return meters


@pytest.mark.slow
def test_thousand_meters_with_faults_then_retry(site, fleet):
    devices = FaultyDevices()
    with site.app.app_context(), service_session() as s:
        batch = create_batch(s, site.group_id, site.property_id, "switch_off", {}, {"meter_ids": fleet}, actor="amy")
        start_batch(s, batch)
        batch_id = batch.id
        assert batch.total == 1000
    run_queued(site.app, batch_id, devices, limit=400)
    with site.app.app_context(), service_session() as s:
        counts = sync_batch(s, s.get(Batch, batch_id))
        assert s.get(Batch, batch_id).status == "running" and counts["running"] > 0 and counts["ok"] > 300
    for _ in range(4):  # transient faults go back to queued; the worker retries while attempts remain
        run_queued(site.app, batch_id, devices)
    with site.app.app_context(), service_session() as s:
        batch = s.get(Batch, batch_id)
        counts = sync_batch(s, batch)
        assert batch.status == "done"
        items = {s.get(Device, s.get(Meter, i.meter_id).device_id).address: i for i in s.execute(
            select(BatchItem).where(BatchItem.batch_id == batch_id)).scalars()}
        failed = {a for a, i in items.items() if i.status == "failed"}
        skipped = {a for a, i in items.items() if i.status == "skipped"}
        assert failed == {str(n) for n in range(10, 1001, 10)}
        assert skipped == {str(n) for n in range(7, 1001, 200)} | {"3", "503"}
        assert counts == {"ok": 1000 - 100 - 7, "failed": 100, "skipped": 7}
        assert all("no answer" in items[a].reason for a in failed)
        assert "keep-power" in shown(items["7"].reason) and "cannot carry out" in shown(items["503"].reason)
        assert items["25"].status == "ok" and devices.calls["25"] == 2  # retried once, then confirmed
        audited = s.execute(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.group_id == site.group_id, AuditEntry.action == "command.confirmed")).scalar_one()
        assert audited == 893
        sheet = load_workbook(io.BytesIO(results_xlsx(s, batch)))["Results"]  # headers and values in words
        rows = list(sheet.iter_rows(values_only=True))
        assert len(rows) == 1001 and rows[0][:6] == ("Meter", "Serial", "Channel", "Room", "Result", "Reason")
        assert sum(1 for r in rows[1:] if r[4] == "Failed") == 100
    devices.healed = True
    with site.app.app_context(), service_session() as s:
        assert len(retry_failed(s, s.get(Batch, batch_id), actor="amy")) == 100
    run_queued(site.app, batch_id, devices)
    with site.app.app_context(), service_session() as s:
        assert sync_batch(s, s.get(Batch, batch_id)) == {"ok": 993, "skipped": 7}


def test_scheduled_batch_starts_when_due_and_can_be_cancelled(site):
    later = utcnow() + timedelta(hours=1)
    with site.app.app_context(), service_session() as s:
        first = create_batch(s, site.group_id, site.property_id, "read_now", {}, {"meter_ids": site.meters},
                             at=later, actor="amy").id
        second = create_batch(s, site.group_id, site.property_id, "read_now", {}, {"meter_ids": site.meters},
                              at=later, actor="amy").id
    with site.app.app_context(), service_session() as s:
        tick(s)  # nothing of these batches is due yet
        assert s.get(Batch, first).status == "scheduled"
        cancel_batch(s, s.get(Batch, second), actor="amy")
    with site.app.app_context(), service_session() as s:
        started = tick(s, now=later + timedelta(seconds=1))
        assert len([c for c in started if s.get(Command, c).meter_id in site.meters]) == 3
        assert s.get(Batch, first).status == "running"
        assert s.get(Batch, second).status == "cancelled" and progress(s, second) == {"skipped": 3}
        with pytest.raises(ValidationError):
            cancel_batch(s, s.get(Batch, first), actor="amy")


def test_topup_batch_once_per_account_and_excel_selection(site):
    book = Workbook()
    book.active.append(("meter",))
    with site.app.app_context(), service_session() as s:
        serials = [s.get(Device, s.get(Meter, m).device_id).serial for m in site.meters]
    # what the console shows: a serial, a second serial; a database id is not a key people know
    for key in (serials[0], serials[1], str(site.meters[2]), "no-such-meter"):
        book.active.append((key,))
    data = io.BytesIO()
    book.save(data)
    keys = keys_from_excel(data.getvalue())
    assert keys == [serials[0], serials[1], str(site.meters[2]), "no-such-meter"]
    with site.app.app_context(), service_session() as s:
        batch = create_batch(s, site.group_id, site.property_id, "topup", {"amount": "10.00"}, {"keys": keys},
                             actor="amy")
        assert batch.selection["unmatched"] == [str(site.meters[2]), "no-such-meter"] and batch.total == 2
        start_batch(s, batch)
        assert batch.status == "done" and progress(s, batch.id) == {"ok": 2}
    with pytest.raises(ValidationError):
        keys_from_excel(b"not a workbook")
