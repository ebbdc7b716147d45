"""What happens next to a command, in words a property manager reads (issue 21 item 8).

A relay command that failed or expired while its meter was away is not the end of it: the desired state stays
on the meter and is sent again when the meter answers (``prepaid.control.reconcile_relays``). Such a command
reads "waiting for the meter to come back — will switch off when it does", not a final failure. A command
being retried says so; the rest keep their state.

    notes = outlook(session, commands)       # {command id: message} for the commands that have one
"""

from __future__ import annotations

from collections.abc import Sequence

from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..devices.models import Meter
from .models import Command

RELAY_KINDS = ("switch", "valve")
_WILL = {("switch", False): _l("waiting for the meter to come back — will switch off when it does"),
         ("switch", True): _l("waiting for the meter to come back — will switch on when it does"),
         ("valve", False): _l("waiting for the meter to come back — will close the valve when it does"),
         ("valve", True): _l("waiting for the meter to come back — will open the valve when it does")}
_RETRYING = _l("the meter did not answer; trying again")
_READ = _l("read: %(values)s")
_QUANTITIES = (("energy_kwh", "kWh"), ("water_m3", "m³"), ("power_kw", "kW"), ("balance", "CNY"))


def target_state(command: Command) -> bool | None:
    """The relay (valve) state a relay command puts the meter in; None for other kinds."""
    if command.kind == "switch":
        return bool(command.params.get("closed"))
    if command.kind == "valve":
        return bool(command.params.get("open"))
    return None


def outlook(session: Session, commands: Sequence[Command]) -> dict[int, str]:
    """Per command that has one: what happens next (as a lazy, translated message)."""
    relay = [c for c in commands if c.kind in RELAY_KINDS and c.state in ("failed", "expired")]
    notes: dict[int, str] = {c.id: _RETRYING for c in commands
                             if c.state == "queued" and c.attempts and c.error}
    notes.update(readings_of(session, [c for c in commands if c.kind == "read_now" and c.state == "confirmed"]))
    if not relay:
        return notes
    meter_ids = sorted({c.meter_id for c in relay})
    meters = {m.id: m for m in session.execute(select(Meter).where(Meter.id.in_(meter_ids))).scalars()}
    latest = {meter_id: command_id for meter_id, command_id in session.execute(
        select(Command.meter_id, Command.id).distinct(Command.meter_id)
        .where(Command.meter_id.in_(meter_ids), Command.kind.in_(RELAY_KINDS))
        .order_by(Command.meter_id, Command.id.desc()))}
    for command in relay:
        meter, wanted = meters.get(command.meter_id), target_state(command)
        if (meter is None or latest.get(command.meter_id) != command.id or meter.relay_desired is not wanted
                or meter.relay_closed is wanted):
            continue  # superseded, no longer wanted, or the meter shows it already
        notes[command.id] = _WILL[(command.kind, bool(wanted))]
    return notes


def readings_of(session: Session, commands: Sequence[Command]) -> dict[int, str]:
    """What each confirmed read-now brought back (from its confirmation in the audit log): "read: 12.5 kWh"."""
    from ..tenants.audit import AuditEntry

    if not commands:
        return {}
    rows = session.execute(select(AuditEntry.object_id, AuditEntry.detail).where(
        AuditEntry.object_type == "command", AuditEntry.action == "command.confirmed",
        AuditEntry.object_id.in_([str(c.id) for c in commands]))).all()
    notes: dict[int, str] = {}
    for object_id, detail in rows:
        values = (detail or {}).get("values") or {}
        shown = [f"{values[key]} {unit}" for key, unit in _QUANTITIES if values.get(key) is not None]
        if shown:
            notes[int(object_id)] = _READ % {"values": ", ".join(shown)}
    return notes
