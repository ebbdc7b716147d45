"""Posting transfers: idempotency, zero-sum entries, per-wallet locking.

    transfer, created = post_transfer(session, group_id, kind="topup", key="k1",
                                      request={...}, legs=[(wallet_id, +amount), (drawer_id, -amount)])

A retry with the same key and the same ``request`` returns the first transfer (``created`` False); the
same key with a different request raises :class:`IdempotencyConflict`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from .errors import IdempotencyConflict, LedgerError
from .models import Entry, LedgerAccount, LedgerBalance, Transfer

ZERO = Decimal("0")


def request_hash(request: dict[str, Any]) -> str:
    """A stable hash of a money request's parameters (what a retry must repeat exactly)."""
    body = json.dumps(request, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def ensure_account(session: Session, group_id: int, kind: str, code: str, name: str = "",
                   property_id: int | None = None) -> int:
    """The id of the group's ledger account ``code``, creating it when missing (race-safe)."""
    stmt = (
        pg_insert(LedgerAccount)
        .values(group_id=group_id, kind=kind, code=code, name=name or code, property_id=property_id)
        .on_conflict_do_nothing(index_elements=["group_id", "code"])
    )
    session.execute(stmt)
    return session.execute(
        select(LedgerAccount.id).where(LedgerAccount.group_id == group_id, LedgerAccount.code == code)
    ).scalar_one()


def lock_accounts(session: Session, account_ids: Iterable[int]) -> None:
    """Lock ledger account rows in id order (serialises money requests on one wallet)."""
    ids = sorted(set(account_ids))
    if ids:
        session.execute(
            select(LedgerAccount.id).where(LedgerAccount.id.in_(ids)).order_by(LedgerAccount.id).with_for_update()
        ).all()


def balance_of(session: Session, account_id: int) -> Decimal:
    """The cached balance of a ledger account (0 when it has no entries yet)."""
    value = session.execute(select(LedgerBalance.balance).where(LedgerBalance.account_id == account_id)).scalar()
    return value if value is not None else ZERO


def find_transfer(session: Session, group_id: int, key: str) -> Transfer | None:
    """The transfer made with idempotency ``key`` in the group, if any."""
    return session.execute(
        select(Transfer).where(Transfer.group_id == group_id, Transfer.idempotency_key == key)
    ).scalar()


def check_replay(existing: Transfer, digest: str, key: str) -> Transfer:
    """Return ``existing`` when the retry repeats it; raise when the key was used for something else."""
    if existing.request_hash != digest:
        raise IdempotencyConflict(
            f"idempotency key {key!r} was already used for a different request (transfer {existing.id}); "
            "use a new key for a new request",
            {"idempotency_key": "reused with different parameters"},
        )
    return existing


def post_transfer(
    session: Session,
    group_id: int,
    *,
    kind: str,
    key: str,
    request: dict[str, Any],
    legs: Sequence[tuple[int, Decimal]],
    wallet_account_id: int | None = None,
    amount: Decimal = ZERO,
    **fields: Any,
) -> tuple[Transfer, bool]:
    """Insert a transfer and its entries (one statement) unless ``key`` was used; returns (transfer, created)."""
    if not key or len(key) > 200:
        raise LedgerError("an idempotency key of 1–200 characters is required for every money request")
    digest = request_hash(request)
    existing = find_transfer(session, group_id, key)
    if existing is not None:
        return check_replay(existing, digest, key), False
    legs = [(account, value) for account, value in legs if value != 0]
    if sum((value for _, value in legs), ZERO) != 0 or len(legs) < 2:
        raise LedgerError(f"transfer {key!r} must have at least two non-zero legs summing to zero: {legs}")
    transfer = Transfer(group_id=group_id, kind=kind, idempotency_key=key, request_hash=digest,
                        wallet_account_id=wallet_account_id, amount=amount, **fields)
    # A concurrent request with the same key makes this flush fail on the unique constraint; the
    # caller's retry then finds that transfer and returns it (see retry.run_money_transaction).
    session.add(transfer)
    session.flush()
    # One multi-row VALUES statement: the zero-sum trigger checks each statement's transfers.
    session.execute(
        insert(Entry).values(
            [{"group_id": group_id, "transfer_id": transfer.id, "account_id": a, "amount": v} for a, v in legs]
        )
    )
    return transfer, True


def next_receipt_no(session: Session, group_id: int) -> str:
    """A receipt number unique across the platform: R<group>-<sequence>."""
    seq = session.execute(text("SELECT nextval('ledger_receipt_seq')")).scalar_one()
    return f"R{group_id}-{seq:08d}"
