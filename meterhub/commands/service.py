"""Creating commands and moving them through their state machine, every step audited.

    queued ──> sent ──> confirmed
      │  │       ├────> failed        (attempts exhausted or the device refused)
      │  │       └────> queued        (retry after a transient error, while attempts and TTL remain)
      │  └──────────────> expired     (TTL passed before it could be sent / confirmed)
      └─────────────────> cancelled   (superseded by a newer command of the same family for the meter)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..devices.models import Device, Meter
from ..errors import ValidationError
from ..models import utcnow
from ..tenants import audit
from .messages import Failure, failure
from .models import FINAL_STATES, KINDS, OPEN_STATES, Command

log = logging.getLogger(__name__)
DEFAULT_TTL = timedelta(hours=2)
TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"sent", "expired", "cancelled"}),
    "sent": frozenset({"confirmed", "failed", "queued", "expired"}),
}
#: Commands of one family replace each other: a newer switch-on cancels a queued switch-off.
FAMILIES = {"switch": "relay", "keep_power": "relay", "resume_prepaid": "relay", "valve": "relay",
            "set_prices": "prices", "set_thresholds": "thresholds", "set_overload_limit": "overload",
            "write_topup": None, "read_now": None}


class InvalidTransition(ValidationError):
    """A command cannot move from its state to the requested one."""


def create_command(
    session: Session, meter: Meter, kind: str, params: dict[str, Any] | None = None, *,
    source: str = "operator", actor: str = "system", operator_id: int | None = None,
    ttl: timedelta = DEFAULT_TTL, max_attempts: int = 3,
) -> Command:
    """Queue a command for ``meter`` (cancelling queued commands of the same family), audited."""
    if kind not in KINDS:
        raise ValidationError(f"unknown command {kind!r}; one of {', '.join(KINDS)}", {"kind": "unknown"})
    device = session.get(Device, meter.device_id)
    family = FAMILIES[kind]
    if family:
        same = [k for k, f in FAMILIES.items() if f == family]
        superseded = failure("command.superseded", "superseded")
        stale = session.execute(
            update(Command).where(Command.meter_id == meter.id, Command.kind.in_(same), Command.state == "queued")
            .values(state="cancelled", done_at=utcnow(), error=superseded.text, error_code=superseded.code,
                    error_params=superseded.params).returning(Command.id)
        ).scalars().all()
        for command_id in stale:
            audit.record(session, meter.group_id, "command.cancelled", actor=actor, operator_id=operator_id,
                         object_type="command", object_id=command_id, detail={"reason": "superseded"})
    command = Command(
        group_id=meter.group_id, property_id=meter.property_id, meter_id=meter.id, device_id=meter.device_id,
        gateway_id=device.gateway_id, kind=kind, params=params or {}, state="queued", source=source, actor=actor,
        operator_id=operator_id, expires_at=utcnow() + ttl, max_attempts=max_attempts,
    )
    session.add(command)
    session.flush()
    audit.record(session, meter.group_id, "command.queued", actor=actor, operator_id=operator_id,
                 object_type="command", object_id=command.id,
                 detail={"meter_id": meter.id, "kind": kind, "params": command.params, "source": source})
    return command


def transition(session: Session, command: Command, to: str, *, error: Failure | None = None, actor: str = "worker",
               detail: dict[str, Any] | None = None) -> Command:
    """Move ``command`` to state ``to`` (validated), stamp times, audit the step; ``error``: why it did not
    succeed (a code of ``messages.MESSAGES``, shown in the reader's language), none when it did."""
    allowed = TRANSITIONS.get(command.state, frozenset())
    if to not in allowed:
        raise InvalidTransition(f"command {command.id} cannot go from {command.state} to {to}")
    now = utcnow()
    previous, command.state = command.state, to
    if to == "sent":
        command.attempts += 1
        command.sent_at = now
    if to in FINAL_STATES:
        command.done_at = now
    if to == "queued":
        command.enqueued_at = None
    text = error.text if error is not None else ""
    command.error = text[:2000]
    command.error_code = error.code if error is not None else None
    command.error_params = error.params if error is not None else None
    session.flush()
    codes = {"error_code": error.code} if error is not None else {}
    audit.record(session, command.group_id, f"command.{to}", actor=actor, object_type="command",
                 object_id=command.id, detail={"from": previous, "attempt": command.attempts, "error": text[:500],
                                               **codes, "kind": command.kind, **(detail or {})})
    return command


def expire_overdue(session: Session, now: datetime | None = None) -> list[int]:
    """Expire open commands whose TTL passed (any group; service session)."""
    now = now or utcnow()
    overdue = session.execute(
        select(Command).where(Command.state.in_(OPEN_STATES), Command.expires_at < now).with_for_update(skip_locked=True)
    ).scalars().all()
    for command in overdue:
        expired = failure("command.expired", "time-to-live passed")
        transition(session, command, "expired", error=expired, actor="scheduler")
        if command.kind == "write_topup":
            from .resync import raise_not_on_meter

            raise_not_on_meter(session, command, expired)
    return [c.id for c in overdue]


def open_commands(session: Session, meter_ids: Iterable[int]) -> list[Command]:
    """Queued or sent commands of these meters, newest first."""
    return list(session.execute(select(Command).where(Command.meter_id.in_(list(meter_ids)),
                                                      Command.state.in_(OPEN_STATES))
                                .order_by(Command.id.desc())).scalars())
