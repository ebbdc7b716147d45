"""Plugin events fired after commits (failures are logged, never raised)."""

from __future__ import annotations

import logging
from decimal import Decimal

log = logging.getLogger(__name__)


def notify_balance(group_id: int, account_id: int, balance: Decimal, *, follow_up: bool = True) -> None:
    """Fire ``balance_changed`` after a committed money movement; with ``follow_up`` (a single movement, not a
    charging run, which does both once for all its accounts) hand the account's queued relay commands to rq and
    turn its balance-level events into alarms now, not at the next periodic job."""
    try:
        from ...plugins import get_plugin_manager

        get_plugin_manager().hook.balance_changed(group_id=group_id, account_id=account_id, balance=balance)
    except Exception:
        log.exception("a balance_changed hook failed for account %s", account_id)
    if follow_up:
        from .forecast_store import request_refresh
        from .promptly import request_alarms, request_hand_over

        request_hand_over(account_id)
        request_alarms()
        request_refresh([account_id])  # the days left follow a top-up or refund at once
