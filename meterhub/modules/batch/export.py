"""Per-meter results of a batch as an Excel workbook."""

from __future__ import annotations

from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.orm import Session

from ...commands.messages import describe
from ...commands.models import Command
from ...devices.models import Device, Meter
from ...tenants.models import Room
from ...spreadsheets import append_row, new_workbook, workbook_bytes
from ...i18n import _l, shown
from ...labels import label
from ...tenants.lookup import labels_of
from .models import Batch, BatchItem

HEADER = (_l("Meter"), _l("Serial"), _l("Channel"), _l("Room"), _l("Result"), _l("Reason"), _l("Command"),
          _l("Command state"), _l("Attempts"))
ABOUT = (("id", _l("Batch")), ("action", _l("Action")), ("status", _l("Status")), ("scheduled_at", _l("Scheduled at")),
         ("started_at", _l("Started at")), ("finished_at", _l("Finished at")), ("actor", _l("Operator")),
         ("total", _l("Meters")))
FAMILIES = {"action": "batch_action", "status": "batch_status"}


def _reason(status: str, reason: str, state: str | None, code: str | None, params: dict | None, error: str) -> str:
    """Why a meter failed, in the current language: its command's error by code (stored as text before); an
    expired or cancelled command says so first (the result column already says failed)."""
    if status == "failed" and code:
        if state == "failed":
            return describe(code, params, error)
        return str(_l("%(state)s: %(error)s", state=label(state, "command_state"), error=describe(code, params, error)))
    return shown(reason)


def results_rows(session: Session, batch_id: int) -> list[tuple]:
    """One row per meter, in meter order: the meter as people know it (serial or room), result and command
    state as labels, the reason of a failure, all in the current language."""
    rows = session.execute(
        select(BatchItem.meter_id, Device.serial, Meter.channel, Room.number, BatchItem.status, BatchItem.reason,
               BatchItem.command_id, Command.state, BatchItem.attempts, Command.error_code, Command.error_params,
               Command.error)
        .join(Meter, Meter.id == BatchItem.meter_id).join(Device, Device.id == Meter.device_id)
        .outerjoin(Room, Room.id == Meter.room_id).outerjoin(Command, Command.id == BatchItem.command_id)
        .where(BatchItem.batch_id == batch_id).order_by(BatchItem.meter_id)).all()
    keys = labels_of(session, session.get(Batch, batch_id).group_id, "meter", [row[0] for row in rows])
    return [(keys.get(row[0], row[1]), row[1], row[2], row[3], str(label(row[4], "batch_result")),
             _reason(row[4], row[5], row[7], row[9], row[10], row[11] or ""),
             row[6], str(label(row[7], "command_state")) if row[7] else "", row[8]) for row in rows]


def results_xlsx(session: Session, batch: Batch) -> bytes:
    """The batch's results as .xlsx bytes (sheet ``results``; a ``batch`` sheet describes the batch)."""
    book = new_workbook()
    sheet = book.create_sheet(_("Results"))
    append_row(sheet, [str(h) for h in HEADER], bold=True)
    for row in results_rows(session, batch.id):
        append_row(sheet, row)
    about = book.create_sheet(_("Batch"))
    for key, name in ABOUT:
        value = getattr(batch, key)
        if key in FAMILIES:
            value = str(label(value, FAMILIES[key]))
        append_row(about, (str(name), value.isoformat(sep=" ", timespec="minutes") if hasattr(value, "isoformat")
                           else value))
    for key, value in (batch.params or {}).items():
        append_row(about, (key, str(value)))
    return workbook_bytes(book)
