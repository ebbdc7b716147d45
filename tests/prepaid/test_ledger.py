"""Ledger: top-up/refund/reversal, idempotency, DB-enforced zero-sum and immutability."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import create_engine, text
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


def test_charge_and_entry_references_checked_per_statement(world, database_url):
    """Migration 0010: statement-level reference checks replace the row-level foreign keys of charges and
    entries; the referenced rows can never be deleted, re-keyed or truncated (every role)."""
    account_id = open_account(world)
    meter = world.meters[0]
    with world.app.app_context(), service_session() as s:
        result = run_money_transaction(s, lambda s: cashier.topup(s, world.group_id, account_id, "5", "cash", "r1",
                                                                  actor="x"))
    with world.app.app_context(), service_session() as s:
        wallet = s.get(PrepaidAccount, account_id).wallet_account_id
        other_group = s.execute(text("INSERT INTO groups (name, code, timezone, modules, created_at) "
                                     "VALUES ('Other', :c, 'Asia/Shanghai', '{}', now()) RETURNING id"),
                                {"c": f"o{account_id}"}).scalar()
    charge = ("INSERT INTO prepaid_charges (group_id, meter_id, account_id, transfer_id, interval_start, interval_end, "
              "usage, cost_exact, amount, note, created_at) VALUES (:g, :m, :a, :t, now() - interval '1 hour', now(), "
              "1, 1, 1, '', now())")
    good = {"g": world.group_id, "m": meter, "a": account_id, "t": result.transfer_id}
    for bad in ({"m": world.meters[2]},  # a meter without prepaid state
                {"m": -1}, {"a": -1}, {"t": -1},
                {"g": other_group}):  # everything exists, but in another group
        with world.app.app_context(), service_session() as s:
            with pytest.raises(DBAPIError, match="references a meter state"):
                s.execute(text(charge), {**good, **bad})
    with world.app.app_context(), service_session() as s:
        s.execute(text(charge), good)  # all references valid
    with world.app.app_context(), service_session() as s:
        with pytest.raises(DBAPIError, match="references a meter state"):
            s.execute(text("UPDATE prepaid_charges SET account_id = -1 WHERE meter_id = :m"), {"m": meter})
    entries = ("INSERT INTO ledger_entries (group_id, transfer_id, account_id, amount, created_at) "
               "VALUES (:g, :t, :a, 1, now()), (:g, :t, :b, -1, now())")
    with world.app.app_context(), service_session() as s:
        drawer = s.execute(text("SELECT account_id FROM ledger_entries WHERE transfer_id = :t AND account_id <> :w"),
                           {"t": result.transfer_id, "w": wallet}).scalar()
    for bad in ({"t": -1}, {"b": -1}, {"g": other_group}):
        with world.app.app_context(), service_session() as s:
            with pytest.raises(DBAPIError, match="references a transfer"):
                s.execute(text(entries), {"g": world.group_id, "t": result.transfer_id, "a": wallet, "b": drawer,
                                          **bad})
    refused = [("DELETE FROM prepaid_accounts WHERE id = :a", {"a": account_id}),
               ("UPDATE prepaid_accounts SET id = -5 WHERE id = :a", {"a": account_id}),
               ("UPDATE prepaid_accounts SET group_id = :o WHERE id = :a", {"a": account_id, "o": other_group}),
               ("DELETE FROM ledger_accounts WHERE id = :w", {"w": wallet}),
               ("UPDATE ledger_accounts SET id = -5 WHERE id = :w", {"w": wallet}),
               ("DELETE FROM prepaid_meter_state WHERE meter_id = :m", {"m": meter}),
               ("UPDATE prepaid_meter_state SET meter_id = :n WHERE meter_id = :m", {"m": meter, "n": world.meters[2]}),
               ("DELETE FROM groups WHERE id = :g", {"g": world.group_id})]
    for statement, params in refused:
        with world.app.app_context(), service_session() as s:
            with pytest.raises(DBAPIError, match="never deleted|immutable"):
                s.execute(text(statement), params)
    owner = create_engine(database_url)  # the roles have no TRUNCATE grant; the owner is stopped by triggers
    for table in ("prepaid_meter_state", "prepaid_accounts", "ledger_accounts"):
        with owner.begin() as conn, pytest.raises(DBAPIError, match="never deleted"):
            conn.execute(text(f"TRUNCATE {table} CASCADE"))
    owner.dispose()
    with world.app.app_context(), service_session() as s:
        s.execute(text("UPDATE prepaid_accounts SET customer_name = 'Han Meimei' WHERE id = :a"), {"a": account_id})
        s.execute(text("UPDATE prepaid_meter_state SET active = active WHERE meter_id = :m"), {"m": meter})
        assert s.execute(text("SELECT count(*) FROM prepaid_charges WHERE meter_id = :m"), {"m": meter}).scalar() == 1
        assert check_ledger(s, world.group_id).ok
