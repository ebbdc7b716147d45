"""The alarm engine: raise, clear and acknowledge alarms, once per subject while open.

    alarm = raise_alarm(session, group_id, "overload", meter_id=12, detail={"power_kw": 9.1})
    clear_alarm(session, group_id, "overload", meter_id=12)
    acknowledge(session, group_id, alarm.id, operator_id=3, actor="alice")

Each function runs in the caller's transaction. A repeated raise of an open alarm (active or acknowledged)
only counts an occurrence: the partial unique index ``ux_alarms_open`` makes a duplicate impossible, even
from concurrent workers. New alarms fire the ``alarm_raised`` hook after the caller's commit.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event, select, text
from sqlalchemy.orm import Session, scoped_session

from ..errors import NotFound, ValidationError
from ..models import utcnow
from .kinds import KINDS, OPEN_STATES, kind as get_kind
from .models import Alarm, AlarmEvent

log = logging.getLogger(__name__)
_PENDING = "meterhub_alarms_raised"
NOTE_LIMIT = 4000  # a raised alarm's note: its detail as messages (alarm_events.note is text)
_SUBJECT_SQL = {
    "meter": "SELECT m.property_id, s.account_id, m.device_id, d.gateway_id FROM meters m "
             "JOIN devices d ON d.id = m.device_id "
             "LEFT JOIN prepaid_meter_state s ON s.meter_id = m.id AND s.active WHERE m.id = :id AND m.group_id = :g",
    "account": "SELECT property_id, id, NULL, NULL FROM prepaid_accounts WHERE id = :id AND group_id = :g",
    "device": "SELECT property_id, NULL, id, gateway_id FROM devices WHERE id = :id AND group_id = :g",
    "gateway": "SELECT property_id, NULL, NULL, id FROM gateways WHERE id = :id AND group_id = :g",
}


@dataclass(frozen=True)
class AlarmSnapshot:
    """What the ``alarm_raised`` hook receives: the alarm's values at commit time (no database access)."""

    id: int
    group_id: int
    property_id: int
    kind: str
    state: str
    subject_key: str
    meter_id: int | None
    account_id: int | None
    device_id: int | None
    gateway_id: int | None
    detail: dict
    raised_at: datetime

    @classmethod
    def of(cls, alarm: Alarm) -> AlarmSnapshot:
        return cls(**{f: getattr(alarm, f) for f in cls.__dataclass_fields__})

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["raised_at"] = self.raised_at.isoformat()
        return data


def subject_of(meter_id: int | None = None, account_id: int | None = None, device_id: int | None = None,
               gateway_id: int | None = None) -> tuple[str, int]:
    """The (subject type, id) of an alarm: the most specific object given."""
    for name, value in (("meter", meter_id), ("account", account_id), ("device", device_id),
                        ("gateway", gateway_id)):
        if value is not None:
            return name, int(value)
    raise ValidationError("an alarm needs a subject: meter_id, account_id, device_id or gateway_id")


def _real(session: Session) -> Session:
    return session() if isinstance(session, scoped_session) else session


def _fire_after_commit(session: Session, snapshot: AlarmSnapshot) -> None:
    real = _real(session)
    pending = real.info.setdefault(_PENDING, [])
    pending.append(snapshot)
    if real.info.get(_PENDING + ":listening"):
        return
    real.info[_PENDING + ":listening"] = True

    @event.listens_for(real, "after_commit")
    def _commit(sess: Session) -> None:
        fire_alarm_raised(sess.info.pop(_PENDING, []))

    @event.listens_for(real, "after_soft_rollback")
    def _rollback(sess: Session, previous_transaction: Any) -> None:
        sess.info.pop(_PENDING, None)


def fire_alarm_raised(snapshots: list[AlarmSnapshot]) -> None:
    """Call the ``alarm_raised`` hook for each alarm; a failing plugin is logged, never propagated."""
    if not snapshots:
        return
    from ..plugins import get_plugin_manager

    hook = get_plugin_manager().hook.alarm_raised
    for snapshot in snapshots:
        try:
            hook(alarm=snapshot)
        except Exception:
            log.exception("an alarm_raised hook failed for alarm %s", snapshot.id)


def raise_alarm(session: Session, group_id: int, kind: str, *, meter_id: int | None = None,
                account_id: int | None = None, device_id: int | None = None, gateway_id: int | None = None,
                detail: dict[str, Any] | None = None, at: datetime | None = None, actor: str = "system") -> Alarm:
    """Raise ``kind`` for a subject of ``group_id``; an open alarm of the same kind and subject is reused."""
    get_kind(kind)
    subject, subject_id = subject_of(meter_id, account_id, device_id, gateway_id)
    found = session.execute(text(_SUBJECT_SQL[subject]), {"id": subject_id, "g": group_id}).first()
    if found is None:
        raise NotFound(f"{subject} {subject_id} not found in group {group_id}; cannot raise {kind}")
    property_id, acc, dev, gw = found
    at = at or utcnow()
    values = {"g": group_id, "p": property_id, "kind": kind, "key": f"{subject}:{subject_id}",
              "meter": meter_id, "account": account_id if account_id is not None else acc,
              "device": device_id if device_id is not None else dev,
              "gateway": gateway_id if gateway_id is not None else gw, "detail": _json(detail), "at": at}
    session.flush()
    new_id = session.execute(text(
        "INSERT INTO alarms (group_id, property_id, kind, state, subject_key, meter_id, account_id, device_id, "
        "gateway_id, detail, occurrences, raised_at, last_seen_at, acknowledged_by_name, cleared_by) "
        "VALUES (:g, :p, :kind, 'active', :key, :meter, :account, :device, :gateway, CAST(:detail AS jsonb), 1, "
        ":at, :at, '', '') ON CONFLICT (group_id, kind, subject_key) WHERE state <> 'cleared' DO NOTHING "
        "RETURNING id"), values).scalar()
    if new_id is None:
        alarm_id = session.execute(text(
            "UPDATE alarms SET occurrences = occurrences + 1, last_seen_at = :at, "
            "detail = detail || CAST(:detail AS jsonb) WHERE group_id = :g AND kind = :kind "
            "AND subject_key = :key AND state <> 'cleared' RETURNING id"), values).scalar_one()
        alarm = session.get(Alarm, alarm_id, populate_existing=True)
        return alarm
    session.add(AlarmEvent(group_id=group_id, alarm_id=new_id, at=at, action="raised", actor=actor,
                           note=_note(detail)))
    session.flush()
    alarm = session.get(Alarm, new_id)
    log.info("alarm %s raised: %s on %s of group %s", new_id, kind, values["key"], group_id)
    _fire_after_commit(session, AlarmSnapshot.of(alarm))
    return alarm


def clear_alarm(session: Session, group_id: int, kind: str, *, meter_id: int | None = None,
                account_id: int | None = None, device_id: int | None = None, gateway_id: int | None = None,
                actor: str = "system", note: Any = "", at: datetime | None = None) -> Alarm | None:
    """Clear the open ``kind`` alarm of a subject (None when there is none); ``note`` is text or a message
    (``_l(...)``, stored to be read in the reader's language)."""
    from ..i18n import stored

    get_kind(kind)
    subject, subject_id = subject_of(meter_id, account_id, device_id, gateway_id)
    at = at or utcnow()
    session.flush()
    alarm_id = session.execute(text(
        "UPDATE alarms SET state = 'cleared', cleared_at = :at, cleared_by = :actor WHERE group_id = :g "
        "AND kind = :kind AND subject_key = :key AND state <> 'cleared' RETURNING id"),
        {"g": group_id, "kind": kind, "key": f"{subject}:{subject_id}", "at": at, "actor": actor[:100]}).scalar()
    if alarm_id is None:
        return None
    session.add(AlarmEvent(group_id=group_id, alarm_id=alarm_id, at=at, action="cleared", actor=actor,
                           note=stored(note, 500)))
    session.flush()
    log.info("alarm %s cleared (%s on %s:%s)", alarm_id, kind, subject, subject_id)
    return session.get(Alarm, alarm_id, populate_existing=True)


def acknowledge(session: Session, group_id: int, alarm_id: int, *, operator_id: int | None, actor: str,
                note: str = "") -> Alarm:
    """An operator has seen an active alarm; it stays open until its cause clears."""
    alarm = session.execute(select(Alarm).where(Alarm.id == alarm_id, Alarm.group_id == group_id)
                            .with_for_update()).scalar()
    if alarm is None:
        raise NotFound(f"alarm {alarm_id} not found")
    if alarm.state == "cleared":
        raise ValidationError(f"alarm {alarm_id} is already cleared; nothing to acknowledge",
                              {"alarm": "cleared"})
    if alarm.state == "acknowledged":
        return alarm
    alarm.state, alarm.acknowledged_at = "acknowledged", utcnow()
    alarm.acknowledged_by, alarm.acknowledged_by_name = operator_id, actor[:100]
    session.add(AlarmEvent(group_id=group_id, alarm_id=alarm.id, at=alarm.acknowledged_at, action="acknowledged",
                           actor=actor, operator_id=operator_id, note=note[:500]))
    session.flush()
    return alarm


def open_alarms(session: Session, group_id: int, meter_ids: list[int] | None = None) -> list[Alarm]:
    """Open alarms of the group (or of these meters), newest first."""
    stmt = select(Alarm).where(Alarm.group_id == group_id, Alarm.state.in_(OPEN_STATES))
    if meter_ids is not None:
        stmt = stmt.where(Alarm.meter_id.in_(meter_ids))
    return list(session.execute(stmt.order_by(Alarm.raised_at.desc())).scalars())


def monitor_status(session: Session, group_id: int, meter_ids: list[int]) -> dict[int, dict[str, str]]:
    """Room-monitor status and colour of each meter with an open alarm (the highest-priority kind wins).

    Account alarms (low balance, arrears) apply to every meter of the account.
    """
    if not meter_ids:
        return {}
    rows = session.execute(text(
        "SELECT s.meter_id, a.kind FROM alarms a JOIN prepaid_meter_state s ON s.account_id = a.account_id "
        "AND s.active WHERE a.group_id = :g AND a.state <> 'cleared' AND a.meter_id IS NULL "
        "AND s.meter_id = ANY(:ids) UNION ALL SELECT a.meter_id, a.kind FROM alarms a WHERE a.group_id = :g "
        "AND a.state <> 'cleared' AND a.meter_id = ANY(:ids)"), {"g": group_id, "ids": list(meter_ids)}).all()
    best: dict[int, str] = {}
    for meter_id, kind in rows:
        if meter_id not in best or KINDS[kind].priority > KINDS[best[meter_id]].priority:
            best[meter_id] = kind
    return {m: {"kind": k, "status": KINDS[k].monitor_status, "colour": KINDS[k].colour} for m, k in best.items()}


def _json(detail: dict[str, Any] | None) -> str:
    import json

    return json.dumps(detail or {}, default=str, ensure_ascii=False)


def _note(detail: dict[str, Any] | None) -> str:
    """A raised event's note: the detail, labelled and formatted, read in the reader's language (``|shown``)."""
    from ..i18n import stored
    from .notes import detail_note

    return stored(detail_note(detail), NOTE_LIMIT)
