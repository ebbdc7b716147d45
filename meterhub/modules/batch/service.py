"""Batch life cycle: create (now or at a time), start, follow commands, retry failures, cancel.

    batch = create_batch(session, group_id, property_id, "switch_off", {}, {"building_id": 3}, actor="amy")
    start_batch(session, batch)        # one item per meter: a command (running), ok, or skipped with reason
    sync_batch(session, batch)         # copies final command states into the items; done when none runs

Starting marks the commands enqueued; after the commit the caller hands them to rq with
:func:`meterhub.commands.worker.enqueue` (the periodic dispatcher picks up any that were missed).
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ...i18n import _l, stored
from ...commands.models import FINAL_STATES, Command
from ...db import service_session
from ...devices.models import Meter
from ...errors import NotFound, ValidationError
from ...models import utcnow
from ...tenants import audit
from ...tenants.models import Property
from . import actions
from .models import Batch, BatchItem
from .selection import select_meters

log = logging.getLogger(__name__)
MAX_METERS = 20_000


def _registry() -> dict[str, Any] | None:
    try:
        from ...plugins import driver_registry

        return driver_registry()
    except Exception:  # no plugins loaded in this process: capabilities are not checked
        log.warning("driver registry unavailable; batch does not check capabilities", exc_info=True)
        return None


def create_batch(session: Session, group_id: int, property_id: int, action: str, params: dict[str, Any],
                 criteria: dict[str, Any], *, at: datetime | None = None, actor: str,
                 operator_id: int | None = None) -> Batch:
    """A batch over the meters matching ``criteria`` (scheduled at ``at``, default now); items pending."""
    prop = session.get(Property, property_id)
    if prop is None or prop.group_id != group_id:
        raise NotFound(_l("property %(property_id)s not found", property_id=property_id))
    params = actions.validate_params(session, group_id, action, params)
    chosen = select_meters(session, group_id, property_id, criteria)
    if not chosen.meter_ids:
        raise ValidationError(_l("no meter matches the selection"), {"selection": "empty"})
    if len(chosen.meter_ids) > MAX_METERS:
        raise ValidationError(_l("at most %(MAX_METERS)s meters per batch", MAX_METERS=MAX_METERS), {"selection": "too many"})
    if at is not None and at.tzinfo is None:
        raise ValidationError(_l("the scheduled time needs a time zone"), {"at": "naive"})
    selection = {**{k: v for k, v in criteria.items() if k != "keys"}, "unmatched": chosen.unmatched[:500]}
    batch = Batch(group_id=group_id, property_id=property_id, action=action, params=params, selection=selection,
                  status="scheduled", scheduled_at=at or utcnow(), actor=actor, operator_id=operator_id,
                  total=len(chosen.meter_ids))
    session.add(batch)
    session.flush()
    session.execute(BatchItem.__table__.insert(), [
        {"group_id": group_id, "batch_id": batch.id, "meter_id": m, "status": "pending", "reason": "", "attempts": 0,
         "updated_at": utcnow()} for m in chosen.meter_ids])
    audit.record(session, group_id, "batch.create", actor=actor, operator_id=operator_id, object_type="batch",
                 object_id=batch.id, detail={"action": action, "params": params, "meters": len(chosen.meter_ids),
                                             "scheduled_at": batch.scheduled_at.isoformat(),
                                             "unmatched": len(chosen.unmatched)})
    return batch


def _run_items(session: Session, batch: Batch, items: list[BatchItem]) -> list[int]:
    registry = _registry()
    done_accounts: dict[int, int] = {}
    meters = {m.id: m for m in session.execute(select(Meter).where(Meter.id.in_([i.meter_id for i in items])))
              .scalars()}
    command_ids = []
    for item in items:
        outcome = actions.apply(session, batch, meters[item.meter_id], registry, done_accounts)
        item.status, item.reason, item.attempts, item.updated_at = outcome.status, stored(outcome.reason), \
            item.attempts + 1, utcnow()
        if outcome.command is not None:
            item.command_id = outcome.command.id
            outcome.command.enqueued_at = utcnow()
            command_ids.append(outcome.command.id)
    session.flush()
    return command_ids


def start_batch(session: Session, batch: Batch) -> list[int]:
    """Apply the action to every pending item; returns command ids to enqueue after the commit."""
    if batch.status != "scheduled":
        raise ValidationError(_l("batch %(id)s is %(status)s; only a scheduled batch starts",
                                 id=batch.id, status=batch.status), {"status": "state"})
    batch.status, batch.started_at = "running", utcnow()
    items = list(session.execute(select(BatchItem).where(BatchItem.batch_id == batch.id, BatchItem.status == "pending")
                                 .order_by(BatchItem.id)).scalars())
    command_ids = _run_items(session, batch, items)
    audit.record(session, batch.group_id, "batch.start", actor=batch.actor, operator_id=batch.operator_id,
                 object_type="batch", object_id=batch.id, detail={"commands": len(command_ids)})
    sync_batch(session, batch)
    return command_ids


def sync_batch(session: Session, batch: Batch) -> dict[str, int]:
    """Copy final command states into running items; mark the batch done when nothing runs. Returns counts."""
    if batch.status == "running":
        finished = session.execute(
            select(BatchItem, Command.state, Command.error).join(Command, Command.id == BatchItem.command_id)
            .where(BatchItem.batch_id == batch.id, BatchItem.status == "running", Command.state.in_(FINAL_STATES))
        ).all()
        for item, state, error in finished:
            item.status = "ok" if state == "confirmed" else "failed"
            item.reason = "" if state == "confirmed" else f"{state}: {error}".strip(": ")
            item.updated_at = utcnow()
        session.flush()
    counts = progress(session, batch.id)
    if batch.status == "running" and not counts.get("running") and not counts.get("pending"):
        batch.status, batch.finished_at = "done", utcnow()
        audit.record(session, batch.group_id, "batch.done", actor="batch", object_type="batch", object_id=batch.id,
                     detail=counts)
    return counts


def progress(session: Session, batch_id: int) -> dict[str, int]:
    """Items per status."""
    rows = session.execute(select(BatchItem.status, func.count()).where(BatchItem.batch_id == batch_id)
                           .group_by(BatchItem.status)).all()
    return dict(Counter({status: n for status, n in rows}))


def retry_failed(session: Session, batch: Batch, *, actor: str, operator_id: int | None = None) -> list[int]:
    """Run the action again for the failed items (new commands); returns command ids to enqueue."""
    items = list(session.execute(select(BatchItem).where(BatchItem.batch_id == batch.id, BatchItem.status == "failed")
                                 .order_by(BatchItem.id)).scalars())
    if not items:
        raise ValidationError(_l("batch %(id)s has no failed meters to retry", id=batch.id), {"items": "none failed"})
    batch.status, batch.finished_at = "running", None
    command_ids = _run_items(session, batch, items)
    audit.record(session, batch.group_id, "batch.retry", actor=actor, operator_id=operator_id, object_type="batch",
                 object_id=batch.id, detail={"meters": len(items)})
    sync_batch(session, batch)
    return command_ids


def cancel_batch(session: Session, batch: Batch, *, actor: str, operator_id: int | None = None) -> None:
    """Cancel a batch that has not started; its items become skipped."""
    if batch.status != "scheduled":
        raise ValidationError(_l("batch %(id)s is %(status)s; only a scheduled batch can be cancelled",
                                 id=batch.id, status=batch.status),
                              {"status": "state"})
    batch.status, batch.finished_at = "cancelled", utcnow()
    session.execute(update(BatchItem).where(BatchItem.batch_id == batch.id)
                    .values(status="skipped", reason=stored(_l("batch cancelled")), updated_at=utcnow()))
    audit.record(session, batch.group_id, "batch.cancel", actor=actor, operator_id=operator_id, object_type="batch",
                 object_id=batch.id, detail={})


def tick(session: Session, now: datetime | None = None) -> list[int]:
    """Start due scheduled batches and sync running ones (any group); returns commands to enqueue."""
    now = now or utcnow()
    command_ids: list[int] = []
    due = session.execute(select(Batch).where(Batch.status == "scheduled", Batch.scheduled_at <= now)
                          .order_by(Batch.id).with_for_update(skip_locked=True)).scalars().all()
    for batch in due:
        command_ids += start_batch(session, batch)
    running = session.execute(select(Batch).where(Batch.status == "running").with_for_update(skip_locked=True)
                              ).scalars().all()
    for batch in running:
        sync_batch(session, batch)
    return command_ids


def tick_job() -> int:
    """Periodic job: start due batches, follow running ones, enqueue the new commands."""
    from ...commands.worker import enqueue

    with service_session() as session:
        command_ids = tick(session)
    enqueue(command_ids)
    return len(command_ids)
