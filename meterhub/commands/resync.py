"""Meter-side prepaid re-sync: put every top-up on the meter, in purchase-count order.

A meter takes a top-up write only with its purchase count + 1 (else Modbus exception 03). When it refuses
one, the worker reads the meter's count and asks :func:`plan` what to do: the write is already on the meter
(count at or past it), or the writes in between are missing and are re-sent in order, each with the amount
of the earlier top-up command that carried that count (one that failed or expired; a count the meter
confirmed once is never sent twice). What cannot be put right without a person (the
meter refuses the next count, or the amount of a missing count is unknown) fails the command and raises a
``topup_not_on_meter`` alarm naming the meter and the amount not yet on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import utcnow
from ..tenants import audit
from .messages import Failure, failure
from .models import Command


@dataclass
class Plan:
    """``applied``: on the meter already; ``writes``: (count, amount, command id) to send in order;
    ``problem``: why a person is needed (None when the plan can run)."""

    meter_count: int
    applied: bool = False
    writes: list[tuple[int, Decimal, int]] = field(default_factory=list)
    problem: Failure | None = None


def plan(session: Session, command: Command, meter_count: int) -> Plan:
    """What to write so that the meter at ``meter_count`` ends at this command's purchase count."""
    target = int(command.params["purchase_count"])
    if meter_count >= target:
        return Plan(meter_count, applied=True)
    if meter_count == target - 1:
        return Plan(meter_count, problem=failure("topup.refused_at_count", count=target, meter_count=meter_count))
    earlier = session.execute(
        select(Command).where(Command.meter_id == command.meter_id, Command.kind == "write_topup",
                              Command.id != command.id).order_by(Command.id)).scalars().all()
    by_count: dict[int, Command] = {}
    for other in earlier:
        by_count[int(other.params.get("purchase_count", -1))] = other  # the newest carrier of a count wins
    writes, unknown, delivered = [], [], []
    for count in range(meter_count + 1, target):
        carrier = by_count.get(count)
        if carrier is None:
            unknown.append(count)
        elif carrier.state == "confirmed":  # the meter took it once: reset or replaced, never send money twice
            delivered.append(count)
        else:
            writes.append((count, Decimal(carrier.params["amount"]), carrier.id))
    writes.append((target, Decimal(command.params["amount"]), command.id))
    if delivered:
        return Plan(meter_count, writes=writes, problem=failure("topup.meter_reset", meter_count=meter_count,
                                                                counts=", ".join(map(str, delivered))))
    if unknown:
        return Plan(meter_count, writes=writes, problem=failure("topup.counts_unknown",
                                                                counts=", ".join(map(str, unknown))))
    return Plan(meter_count, writes=writes)


def mark_resynced(session: Session, command_id: int, by: int, actor: str = "worker") -> None:
    """An earlier write (failed, expired or still open) reached the meter during the re-sync of ``by``."""
    earlier = session.get(Command, command_id, with_for_update=True)
    if earlier is None or earlier.state == "confirmed":
        return
    previous = earlier.state
    earlier.state, earlier.done_at, earlier.error, earlier.owner = "confirmed", utcnow(), "", None
    earlier.error_code, earlier.error_params = None, None
    session.flush()
    audit.record(session, earlier.group_id, "command.confirmed", actor=actor, object_type="command",
                 object_id=earlier.id, detail={"from": previous, "resync_by": by, "kind": earlier.kind})


def missing_amount(session: Session, command: Command, meter_count: int | None) -> Decimal:
    """The money of this command and of the earlier writes the meter has not taken yet."""
    target = int(command.params["purchase_count"])
    total = Decimal(command.params["amount"])
    if meter_count is None:
        return total
    rows = session.execute(select(Command.params).where(
        Command.meter_id == command.meter_id, Command.kind == "write_topup", Command.id != command.id,
        Command.state != "confirmed")).scalars()
    seen: dict[int, Decimal] = {}
    for params in rows:
        count = int(params.get("purchase_count", -1))
        if meter_count < count < target:
            seen[count] = Decimal(params["amount"])
    return total + sum(seen.values(), Decimal(0))


def raise_not_on_meter(session: Session, command: Command, reason: Failure, meter_count: int | None = None) -> None:
    """Alarm: a top-up write needs a person; names the meter, the amount not yet on it and why (a code of
    :mod:`meterhub.commands.messages`, shown in the reader's language)."""
    from ..alarms.engine import raise_alarm
    from ..alarms.texts import reason_fields

    detail: dict[str, Any] = {"amount": str(missing_amount(session, command, meter_count)),
                              "meter_count": meter_count, "our_count": int(command.params["purchase_count"]),
                              "command_id": command.id, **reason_fields(reason)}
    raise_alarm(session, command.group_id, "topup_not_on_meter", meter_id=command.meter_id, detail=detail,
                actor="worker")


def clear_not_on_meter(session: Session, command: Command) -> None:
    """The meter holds every write up to this one: clear its ``topup_not_on_meter`` alarm."""
    from ..alarms.engine import clear_alarm
    from ..i18n import _l

    clear_alarm(session, command.group_id, "topup_not_on_meter", meter_id=command.meter_id, actor="worker",
                note=_l("purchase count %(count)s is on the meter", count=command.params.get("purchase_count")))
