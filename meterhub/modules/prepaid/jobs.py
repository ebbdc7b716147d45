"""Periodic jobs of the prepaid module (run by rq workers through ``meterhub.jobs.run``)."""

from __future__ import annotations

import logging

from sqlalchemy import text

from ...commands.worker import dispatch
from ...db import service_session
from ...ledger import check_ledger
from .charging import DEFAULT_SHARDS, ChargeSummary, charge_all
from .events import notify_balance

log = logging.getLogger(__name__)


def charge() -> ChargeSummary:
    """Charge every new interval of every group (service role, concurrent shards), then send the queued commands."""
    summary = charge_all(shards=DEFAULT_SHARDS)
    if summary.accounts:
        with service_session() as session:
            rows = session.execute(text(
                "SELECT a.group_id, a.id, coalesce(b.balance, 0) FROM prepaid_accounts a "
                "LEFT JOIN ledger_balances b ON b.account_id = a.wallet_account_id WHERE a.id = ANY(:ids)"),
                {"ids": sorted(summary.accounts)}).all()
        for group_id, account_id, balance in rows:
            notify_balance(group_id, account_id, balance, follow_up=False)
    dispatch()
    if summary.level_changes:
        from .promptly import request_alarms

        request_alarms()
    return summary


def charge_stored() -> int:
    """Event job (queued when readings are stored): see :func:`meterhub.modules.prepaid.promptly.charge_stored`."""
    from .promptly import charge_stored as run

    return run()


def verify_ledger() -> bool:
    """Prove every transfer balanced and every cached balance equal to its entries (logs violations)."""
    with service_session() as session:
        report = check_ledger(session)
    if not report.ok:
        log.error("LEDGER INCONSISTENT: %s", report)
    return report.ok
