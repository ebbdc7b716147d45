"""Real-time charging: every new interval of every active meter charged once, set-based.

    summary = charge_new_intervals(session)          # service session, all groups
    summary = charge_new_intervals(session, meter_ids=[...])   # before closing an account

One transaction: build ``_chg`` (see ``charging_sql``), insert one charge transfer per group, the charge
rows (unique per (meter, interval_end) and (meter, interval_start)), the wallet/revenue entries in one
statement, advance the meter states, then run the control loop for the accounts charged. A global
advisory lock keeps two runs from overlapping; the unique keys make a double charge impossible anyway.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.orm import Session

from ...models import utcnow
from ...tenants import audit
from . import charging_sql as q
from .control import evaluate_accounts

log = logging.getLogger(__name__)
RUN_LOCK = (7306, 1)


@dataclass
class ChargeSummary:
    """What one charging run did."""

    run_key: str
    intervals: int = 0
    amount: Decimal = Decimal("0")
    groups: int = 0
    accounts: set[int] = field(default_factory=set)
    level_changes: int = 0


def charge_new_intervals(session: Session, *, meter_ids: list[int] | None = None, until: datetime | None = None,
                         run_key: str | None = None, control: bool = True) -> ChargeSummary:
    """Charge all new readings (or those of ``meter_ids``) up to ``until``; caller commits."""
    summary = ChargeSummary(run_key or f"charge:{uuid.uuid4().hex}")
    params = {"run_key": summary.run_key}
    session.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": RUN_LOCK[0], "b": RUN_LOCK[1]})
    session.execute(text("DROP TABLE IF EXISTS _chg"))
    session.execute(text(q.BUILD), {"meter_ids": meter_ids, "until": until or utcnow()})
    session.execute(text("ANALYZE _chg"))
    session.execute(text(q.REVENUE_ACCOUNTS))
    session.execute(text(q.TRANSFERS), params)
    session.execute(text(q.CHARGES), params)
    session.execute(text(q.ENTRIES), params)
    session.execute(text(q.STATE))
    session.execute(text(q.RESET_EVENTS))
    for row in session.execute(text(q.SUMMARY), params).all():
        summary.groups += 1
        summary.intervals += row.intervals
        summary.amount += row.amount
        summary.accounts.update(row.accounts or ())
        audit.record(session, row.group_id, "prepaid.charge", actor="charging", object_type="transfer",
                     object_id=row.transfer_id or "",
                     detail={"run": summary.run_key, "intervals": row.intervals, "amount": str(row.amount)})
    session.execute(text("DROP TABLE IF EXISTS _chg"))
    if control and summary.accounts:
        summary.level_changes = len(evaluate_accounts(session, sorted(summary.accounts), actor="charging"))
    log.info("charging %s: %d intervals, %s CNY, %d groups", summary.run_key, summary.intervals, summary.amount,
             summary.groups)
    return summary
