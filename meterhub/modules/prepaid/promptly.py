"""What follows a commit at once, not at the next periodic job: charging, relay commands, balance alarms.

- readings stored → their meters are charged by an event job (:func:`charge_stored`, coalesced through
  :mod:`meterhub.soon`), whose control loop queues a trip that is handed to the commands queue right away;
- a meter that answers again → its relay command waiting for a retry (sent while it was offline) is retried now;
- a money movement committed (top-up, refund, payment callback) → the account's meters' queued commands are
  handed over now, and the balance-level events become alarms now (:func:`request_alarms`).

The periodic jobs (``prepaid.charge`` every minute, ``commands.dispatch`` every 15 s, ``alarms.poll`` every
minute) stay as the safety net for anything an event missed (Redis unreachable, a lost job).
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Iterable

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from ... import soon
from ...commands.models import Command
from .control import RELAY_KINDS
from .models import MeterState

log = logging.getLogger(__name__)
CHARGE_STORED = "meterhub.modules.prepaid.jobs:charge_stored"
ALARM_EVENTS = "meterhub.alarms.sources:poll_events"
HAND_OVER_ACCOUNTS = "meterhub.modules.prepaid.promptly:hand_over_accounts"


def request_charge(meter_ids: Iterable[int]) -> None:
    """Readings of ``meter_ids`` were stored: charge them soon (one coalesced job), on the charging worker's
    queue: on ``default`` the trip it decides waited behind the alarm jobs of the same burst (~20 s in the
    latency bench: event polls waiting for older transactions, notification runs)."""
    soon.request(CHARGE_STORED, queue="periodic", items=meter_ids)


def request_alarms() -> None:
    """Prepaid or health events were committed: turn them into alarms soon (one coalesced job)."""
    soon.request(ALARM_EVENTS)


def hand_over_meters(meter_ids: Iterable[int], here: bool = False) -> list[int]:
    """Hand each meter's next queued command to rq now, in one go (those already handed over are left alone);
    ``here``: run them in this job of the commands queue."""
    from ...commands.worker import hand_over_meters as hand_over

    try:
        return hand_over(sorted(set(meter_ids)), here=here)
    except Exception as err:  # noqa: BLE001 - Redis down: commands.dispatch hands them over later
        log.warning("meters %s: commands not handed over now (%s); dispatch will", sorted(set(meter_ids))[:10], err)
        return []


def retry_waiting(session: Session, meter_ids: Iterable[int]) -> list[int]:
    """Relay commands of ``meter_ids`` (which just answered a poll) waiting for a retry: queue them now.

    A command sent while its meter was offline waits 10, 20, 40 … s before its next try; the meter is back, so
    it is tried at once (its delayed job then finds it no longer queued and steps back)."""
    from ...commands.worker import enqueue

    ids = list(session.execute(select(Command.id).where(
        Command.meter_id.in_(list(meter_ids)), Command.state == "queued", Command.attempts > 0,
        Command.kind.in_(RELAY_KINDS))).scalars())
    if ids:
        try:
            enqueue(ids)
        except Exception as err:  # noqa: BLE001 - Redis down: the delayed retry still runs
            log.warning("commands %s: not retried now (%s)", ids, err)
    return ids


def request_hand_over(account_id: int) -> None:
    """A money movement of ``account_id`` was committed: hand its meters' queued commands to rq soon (a job on
    the commands queue, because a web request does not use the service role)."""
    soon.request(HAND_OVER_ACCOUNTS, queue="commands", items=[account_id])


def hand_over_accounts() -> list[int]:
    """Event job: hand over the queued commands of the meters of the accounts requested since the last run."""
    from ...db import service_session

    account_ids = soon.take(HAND_OVER_ACCOUNTS)
    if not account_ids:
        return []
    with service_session() as session:
        meter_ids = list(session.execute(select(MeterState.meter_id).where(
            MeterState.account_id.in_(account_ids), MeterState.active.is_(True))).scalars())
    return hand_over_meters(meter_ids, here=True)  # this job is on the commands queue: send them now


def charge_stored() -> int:
    """Event job: charge the meters whose readings were stored since the last run, in one transaction, then
    fire ``balance_changed``, hand over the commands the control loop queued and raise the balance alarms."""
    from ...db import service_session
    from ...ledger import run_money_transaction
    from .charging import charge_new_intervals
    from .events import notify_balance

    meter_ids = soon.take(CHARGE_STORED)
    if not meter_ids:
        return 0
    run, attempts = f"charge:{uuid.uuid4().hex}:stored", itertools.count(1)

    def work(session: Session):  # noqa: ANN202
        attempt = next(attempts)
        return charge_new_intervals(session, meter_ids=meter_ids, run_key=run if attempt == 1 else f"{run}#{attempt}")

    with service_session() as session:
        summary = run_money_transaction(session, work)
    if summary.accounts:
        with service_session() as session:
            rows = session.execute(text(
                "SELECT a.group_id, a.id, coalesce(b.balance, 0) FROM prepaid_accounts a "
                "LEFT JOIN ledger_balances b ON b.account_id = a.wallet_account_id WHERE a.id = ANY(:ids)"),
                {"ids": sorted(summary.accounts)}).all()
        for group_id, account_id, balance in rows:
            notify_balance(group_id, account_id, balance, follow_up=False)
    if summary.level_changes:
        hand_over_meters(meter_ids)
        request_alarms()
    return summary.intervals
