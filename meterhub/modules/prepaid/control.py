"""The prepaid control loop: balance → alarm level → desired relay/valve state → commands.

Levels: 0 normal, 1 alarm 1 (balance ≤ alarm1, or days of money left ≤ alarm1_days), 2 alarm 2 (≤ alarm2 or
alarm2_days), 3 arrears (≤ 0 − overdraft limit,
the trip line). A change of level is stored on the account and recorded once as a ``prepaid_events`` row.
Reaching level 3 sets ``Meter.relay_desired = False`` and queues a switch-off (valve close for water)
unless the meter is on keep-power; leaving level 3 sets it True and queues a switch-on. The desired state
stays on the meter: :func:`reconcile_relays` re-queues it whenever a reading shows the relay elsewhere
(e.g. a meter that was offline comes back), so a command is never dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ...commands.models import OPEN_STATES, Command
from ...commands.service import create_command
from ...devices.models import Meter
from ...errors import ValidationError
from .forecast_store import DAYS_LEFT_SQL
from .models import MeterState, PrepaidAccount

log = logging.getLogger(__name__)
ARREARS = 3
RELAY_KINDS = ("switch", "valve", "keep_power", "resume_prepaid")

LEVEL_SQL = """
WITH acc AS (
  SELECT a.id, a.group_id, a.alarm_level AS old_level, coalesce(b.balance, 0) AS balance,
         CASE WHEN coalesce(b.balance, 0) <= -a.overdraft_limit THEN 3
              WHEN coalesce(b.balance, 0) <= a.alarm2 OR d.days <= a.alarm2_days THEN 2
              WHEN coalesce(b.balance, 0) <= a.alarm1 OR d.days <= a.alarm1_days THEN 1 ELSE 0 END AS new_level
  FROM prepaid_accounts a LEFT JOIN ledger_balances b ON b.account_id = a.wallet_account_id
  -- levels in days: the days left now from the account's stored forecast (forecast_store, migration 0023)
  LEFT JOIN LATERAL (SELECT {days_left} AS days FROM prepaid_forecasts f WHERE f.account_id = a.id
                     AND (a.alarm1_days IS NOT NULL OR a.alarm2_days IS NOT NULL)
                     AND f.computed_at > now() - interval '2 days') d ON true
  WHERE a.status = 'open' AND a.id = ANY(CAST(:ids AS bigint[]))
), changed AS (
  UPDATE prepaid_accounts p SET alarm_level = acc.new_level FROM acc
  WHERE p.id = acc.id AND acc.new_level <> acc.old_level
  RETURNING p.id, p.group_id, acc.old_level, acc.new_level, acc.balance
), events AS (
  INSERT INTO prepaid_events (group_id, account_id, kind, level, balance, detail, at)
  SELECT group_id, id,
         CASE WHEN new_level < old_level THEN 'cleared'
              ELSE (ARRAY['alarm1', 'alarm2', 'arrears'])[new_level] END,
         new_level, balance, jsonb_build_object('from', old_level), now()
  FROM changed
)
SELECT id, group_id, old_level, new_level, balance FROM changed
""".format(days_left=DAYS_LEFT_SQL)


def relay_command(meter: Meter, closed: bool) -> tuple[str, dict[str, Any]]:
    """The command that puts ``meter``'s relay (or valve, for water) in the wanted state."""
    if meter.utility == "water":
        return "valve", {"open": closed}
    return "switch", {"closed": closed}


def set_desired(session: Session, meter: Meter, closed: bool, *, actor: str, operator_id: int | None = None,
                source: str = "prepaid", force: bool = False) -> Command | None:
    """Store the desired relay state and queue the command when it changed (or ``force``)."""
    if meter.relay_desired is closed and not force:
        return None
    meter.relay_desired = closed
    kind, params = relay_command(meter, closed)
    if not can_actuate(session, meter, kind):
        if source in ("operator", "batch"):  # somebody asked for it: say why it cannot happen
            raise ValidationError(f"meter {meter.id}: its device cannot {kind.replace('_', ' ')} "
                                  "(no relay or valve in this model/variant)", {"kind": "unsupported"})
        log.info("meter %s has no %s on its device: desired state stored, no command", meter.id, kind)
        return None
    return create_command(session, meter, kind, params, source=source, actor=actor, operator_id=operator_id)


def can_actuate(session: Session, meter: Meter, kind: str) -> bool:
    """Whether the meter's device can carry out ``kind`` (a metering-only meter has no relay to switch)."""
    from ...devices.models import Device
    from ...plugins import driver_registry

    device = session.get(Device, meter.device_id)
    driver = driver_registry().get(device.driver_key) if device else None
    return bool(driver and driver.supports(kind, device.config))


def account_meters(session: Session, account_ids: Iterable[int]) -> list[tuple[int, Meter]]:
    """(account id, meter) of the active meters of these accounts."""
    rows = session.execute(
        select(MeterState.account_id, Meter).join(Meter, Meter.id == MeterState.meter_id)
        .where(MeterState.account_id.in_(list(account_ids)), MeterState.active)
    ).all()
    return [(account_id, meter) for account_id, meter in rows]


def evaluate_accounts(session: Session, account_ids: Sequence[int], *, actor: str = "prepaid",
                      before_commands: Callable[[], None] | None = None) -> list[dict]:
    """Apply the control loop to these accounts after their balance changed; returns the level changes.

    ``before_commands`` runs after the levels are stored and before any command is queued (the charging
    run takes its groups' audit-chain locks there, in order: see ``charging``)."""
    if not account_ids:
        return []
    session.flush()
    # the ids as one array literal: psycopg2 would send a list as ARRAY[...], one SQL constant per element
    # (0.1 s to build and parse for a charging shard's 50,000 accounts, a tenth of that as a literal)
    ids = "{" + ",".join(str(int(i)) for i in account_ids) + "}"
    changes = [dict(row._mapping) for row in session.execute(text(LEVEL_SQL), {"ids": ids})]
    if before_commands:
        before_commands()
    changed_ids = {c["id"] for c in changes}
    for obj in list(session.identity_map.values()):  # the UPDATE ran in SQL: refresh loaded accounts
        if isinstance(obj, PrepaidAccount) and obj.id in changed_ids:
            session.expire(obj, ["alarm_level"])
    tripped = {c["id"] for c in changes if c["new_level"] == ARREARS}
    restored = {c["id"] for c in changes if c["old_level"] == ARREARS and c["new_level"] < ARREARS}
    if tripped or restored:
        for account_id, meter in account_meters(session, tripped | restored):
            if account_id in tripped and not meter.keep_power:
                set_desired(session, meter, False, actor=actor)
            elif account_id in restored:
                set_desired(session, meter, True, actor=actor)
    if changes:
        log.info("prepaid control: %d level changes, %d trips, %d restores", len(changes), len(tripped),
                 len(restored))
    return changes


def keep_power(session: Session, meter: Meter, on: bool, *, actor: str, operator_id: int | None = None) -> Command:
    """保电 on: never trip this meter (relay closed); off = resume prepaid (恢复预付费): the balance decides."""
    if not can_actuate(session, meter, "keep_power"):
        raise ValidationError(f"meter {meter.id}: its device has no keep-power (保电) control", {"kind": "unsupported"})
    meter.keep_power = on
    if on:
        meter.relay_desired = True
        return create_command(session, meter, "keep_power", {"on": True}, actor=actor, operator_id=operator_id)
    account_id = session.execute(select(MeterState.account_id).where(MeterState.meter_id == meter.id,
                                                                     MeterState.active)).scalar()
    level = session.get(PrepaidAccount, account_id).alarm_level if account_id else 0
    meter.relay_desired = level < ARREARS
    return create_command(session, meter, "resume_prepaid", {"closed": meter.relay_desired}, actor=actor,
                          operator_id=operator_id)


def reconcile_relays(session: Session, meter_ids: Iterable[int], *, actor: str = "prepaid") -> list[Command]:
    """Re-queue the desired relay state of meters that answered, when no relay command of theirs is open and
    either their relay is known to differ, or it was never known and the last relay command did not end
    confirmed (it failed or expired while the meter was away, or none was ever sent). The command reads the
    meter first (``verify_first``) and only switches when the meter does not already show the desired state."""
    ids = list(meter_ids)
    if not ids:
        return []
    busy = select(Command.meter_id).where(Command.meter_id.in_(ids), Command.state.in_(OPEN_STATES),
                                         Command.kind.in_(RELAY_KINDS))
    last_state = (select(Command.state).where(Command.meter_id == Meter.id, Command.kind.in_(RELAY_KINDS))
                  .order_by(Command.id.desc()).limit(1).correlate(Meter).scalar_subquery())
    unknown_unconfirmed = Meter.relay_closed.is_(None) & func.coalesce(last_state, "none").not_in(("confirmed",))
    meters = session.execute(
        select(Meter).where(Meter.id.in_(ids), Meter.relay_desired.is_not(None), Meter.id.not_in(busy),
                            (Meter.relay_desired != Meter.relay_closed) | unknown_unconfirmed)
    ).scalars().all()
    created = [c for m in meters if (c := set_desired(session, m, bool(m.relay_desired), actor=actor, force=True))]
    for command in created:
        command.verify_first = True  # read it, then act
    return created
