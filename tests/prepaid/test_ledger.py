"""Ledger: top-up/refund/reversal, idempotency, DB-enforced zero-sum and immutability."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from meterhub.db import service_session, use_group
from meterhub.extensions import db
from meterhub.ledger import check_ledger, run_money_transaction
from meterhub.ledger.errors import AlreadyReversed, IdempotencyConflict, InsufficientBalance
from meterhub.ledger.post import balance_of
from meterhub.modules.prepaid import accounts, cashier
from meterhub.modules.prepaid.models import PrepaidAccount


def open_account(world, meters=None, **kw) -> int:
    with world.app.app_context(), service_session() as s:
        account = accounts.create_account(s, world.group_id, world.property_id, meters or world.meters[:1],
                                          room_id=world.room_id, customer_name="Li Lei", phone="13800000000",
                                          actor="test", **kw)
        return account.id


def test_topup_refund_reversal_with_idempotency(world):
    account_id = open_account(world)
    with world.app.app_context():
        use_group(world.group_id)
        s = db.session
        r1 = run_money_transaction(s, lambda s: cashier.topup(s, world.group_id, account_id, "100.00", "cash", "k1",
                                                              actor="cashier"))
        assert r1.created and r1.balance == Decimal("100.00") and r1.receipt_no
        again = run_money_transaction(s, lambda s: cashier.topup(s, world.group_id, account_id, "100.00", "cash",
                                                                 "k1", actor="cashier"))
        assert not again.created and again.transfer_id == r1.transfer_id and again.receipt_no == r1.receipt_no
        with pytest.raises(IdempotencyConflict):
            cashier.topup(s, world.group_id, account_id, "100.01", "cash", "k1", actor="cashier")
        s.rollback()
        with pytest.raises(InsufficientBalance):
            cashier.refund(s, world.group_id, account_id, "100.01", "cash", "r1", actor="cashier")
        s.rollback()
        r2 = run_money_transaction(s, lambda s: cashier.refund(s, world.group_id, account_id, "30.50", "cash", "r1",
                                                               actor="cashier"))
        assert r2.balance == Decimal("69.50")
        r3 = run_money_transaction(s, lambda s: cashier.reverse(s, world.group_id, r1.transfer_id, "wrong room",
                                                                "rev1", actor="manager"))
        assert r3.balance == Decimal("-30.50")
        with pytest.raises(AlreadyReversed):
            cashier.reverse(s, world.group_id, r1.transfer_id, "again", "rev2", actor="manager")
        s.rollback()
        account = s.get(PrepaidAccount, account_id)
        assert account.alarm_level == 3  # below the trip line after the reversal
        assert balance_of(s, account.wallet_account_id) == Decimal("-30.50")
    with world.app.app_context(), service_session() as s:
        assert check_ledger(s, world.group_id).ok


def test_amount_validation(world):
    account_id = open_account(world)
    from meterhub.errors import ValidationError

    with world.app.app_context(), service_session() as s:
        for bad in ("0", "-1", "1.001", "abc", 1.5, "NaN", "2000000"):
            with pytest.raises(ValidationError):
                cashier.topup(s, world.group_id, account_id, bad, "cash", f"bad-{bad}", actor="x")
        with pytest.raises(ValidationError):
            cashier.topup(s, world.group_id, account_id, "1", "bitcoin", "bad-ch", actor="x")


def test_database_refuses_unbalanced_and_edits(world):
    account_id = open_account(world)
    with world.app.app_context():
        use_group(world.group_id)
        s = db.session
        result = run_money_transaction(s, lambda s: cashier.topup(s, world.group_id, account_id, "5", "card", "c1",
                                                                  actor="x"))
        wallet = s.get(PrepaidAccount, account_id).wallet_account_id
        with pytest.raises(DBAPIError, match="does not sum to zero"):
            s.execute(text("INSERT INTO ledger_entries (group_id, transfer_id, account_id, amount, created_at) "
                           "VALUES (:g, :t, :a, 1, now())"), {"g": world.group_id, "t": result.transfer_id, "a": wallet})
        s.rollback()
        for stmt in ("UPDATE ledger_entries SET amount = amount * 2", "DELETE FROM ledger_entries",
                     "UPDATE ledger_transfers SET amount = 0", "UPDATE ledger_balances SET balance = 1000"):
            with pytest.raises(DBAPIError):  # app role: no grant; service role: trigger
                s.execute(text(stmt))
            s.rollback()
        with pytest.raises(DBAPIError):
            s.execute(text("INSERT INTO ledger_balances (group_id, account_id, balance) VALUES (:g, -1, 5)"),
                      {"g": world.group_id})
        s.rollback()
    with world.app.app_context(), service_session() as s:
        with pytest.raises(DBAPIError, match="immutable"):
            s.execute(text("UPDATE ledger_entries SET amount = amount * 2 WHERE group_id = :g"), {"g": world.group_id})
    with world.app.app_context(), service_session() as s:
        assert check_ledger(s, world.group_id).ok
