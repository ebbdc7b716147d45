"""Per-meter results of a batch as an Excel workbook."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ...commands.models import Command
from ...devices.models import Device, Meter
from ...tenants.models import Room
from ...spreadsheets import append_row, new_workbook, workbook_bytes
from .models import Batch, BatchItem

HEADER = ("meter_id", "serial", "channel", "room", "status", "reason", "command_id", "command_state", "attempts")


def results_rows(session: Session, batch_id: int) -> list[tuple]:
    """One row per meter, in meter order."""
    return [tuple(row) for row in session.execute(
        select(BatchItem.meter_id, Device.serial, Meter.channel, Room.number, BatchItem.status, BatchItem.reason,
               BatchItem.command_id, Command.state, BatchItem.attempts)
        .join(Meter, Meter.id == BatchItem.meter_id).join(Device, Device.id == Meter.device_id)
        .outerjoin(Room, Room.id == Meter.room_id).outerjoin(Command, Command.id == BatchItem.command_id)
        .where(BatchItem.batch_id == batch_id).order_by(BatchItem.meter_id))]


def results_xlsx(session: Session, batch: Batch) -> bytes:
    """The batch's results as .xlsx bytes (sheet ``results``; a ``batch`` sheet describes the batch)."""
    book = new_workbook()
    sheet = book.create_sheet("results")
    append_row(sheet, HEADER, bold=True)
    for row in results_rows(session, batch.id):
        append_row(sheet, row)
    about = book.create_sheet("batch")
    for key in ("id", "action", "status", "scheduled_at", "started_at", "finished_at", "actor", "total"):
        value = getattr(batch, key)
        append_row(about, (key, value.isoformat() if hasattr(value, "isoformat") else value))
    append_row(about, ("params", str(batch.params)))
    return workbook_bytes(book)
