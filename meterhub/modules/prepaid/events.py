"""Plugin events fired after commits (failures are logged, never raised)."""

from __future__ import annotations

import logging
from decimal import Decimal

log = logging.getLogger(__name__)


def notify_balance(group_id: int, account_id: int, balance: Decimal) -> None:
    """Fire ``balance_changed`` after a committed money movement."""
    try:
        from ...plugins import get_plugin_manager

        get_plugin_manager().hook.balance_changed(group_id=group_id, account_id=account_id, balance=balance)
    except Exception:
        log.exception("a balance_changed hook failed for account %s", account_id)
