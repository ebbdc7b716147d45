"""Errors of the ledger."""

from __future__ import annotations

from ..errors import MeterhubError, ValidationError


class LedgerError(MeterhubError):
    """A money movement was refused; the message says which account and why."""


class IdempotencyConflict(ValidationError):
    """The idempotency key was already used for a different request."""


class InsufficientBalance(LedgerError):
    """The account's balance does not cover the requested amount (refund)."""


class AlreadyReversed(LedgerError):
    """The transfer was already reversed (a transfer is reversed at most once)."""
