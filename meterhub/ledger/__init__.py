"""The double-entry ledger: accounts, immutable transfers and entries, idempotency, money rounding."""

from .check import LedgerReport, check_ledger
from .errors import AlreadyReversed, IdempotencyConflict, InsufficientBalance, LedgerError
from .money import CENT, booked_increment, parse_amount, round_money, round_sub_cent
from .post import balance_of, ensure_account, lock_accounts, post_transfer
from .retry import run_money_transaction

__all__ = [
    "CENT", "AlreadyReversed", "IdempotencyConflict", "InsufficientBalance", "LedgerError", "LedgerReport",
    "balance_of", "booked_increment", "check_ledger", "ensure_account", "lock_accounts", "parse_amount",
    "post_transfer", "round_money", "round_sub_cent", "run_money_transaction",
]
