"""Checks that prove the ledger consistent: run by tests and periodically by the scheduler."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.orm import Session


@dataclass
class LedgerReport:
    """Violations found; empty lists mean the ledger is consistent."""

    unbalanced_transfers: list[int] = field(default_factory=list)
    balance_mismatches: list[tuple[int, str, str]] = field(default_factory=list)  # account, cached, sum
    transfers_without_entries: list[int] = field(default_factory=list)
    double_reversals: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unbalanced_transfers or self.balance_mismatches or self.transfers_without_entries
                    or self.double_reversals)


def check_ledger(session: Session, group_id: int | None = None) -> LedgerReport:
    """Every transfer sums to zero and has entries; every cached balance equals the sum of its entries."""
    where = "" if group_id is None else "WHERE t.group_id = :g"
    params = {} if group_id is None else {"g": group_id}
    report = LedgerReport()
    report.unbalanced_transfers = list(session.execute(text(
        f"SELECT t.id FROM ledger_transfers t JOIN ledger_entries e ON e.transfer_id = t.id {where} "
        "GROUP BY t.id HAVING sum(e.amount) <> 0"), params).scalars())
    report.transfers_without_entries = list(session.execute(text(
        f"SELECT t.id FROM ledger_transfers t {where} {'AND' if where else 'WHERE'} NOT EXISTS "
        "(SELECT 1 FROM ledger_entries e WHERE e.transfer_id = t.id) AND t.amount <> 0"), params).scalars())
    bwhere = "" if group_id is None else "WHERE a.group_id = :g"
    report.balance_mismatches = [
        (row[0], str(row[1]), str(row[2])) for row in session.execute(text(
            "SELECT a.id, coalesce(b.balance, 0), coalesce(s.total, 0) FROM ledger_accounts a "
            "LEFT JOIN ledger_balances b ON b.account_id = a.id "
            "LEFT JOIN (SELECT account_id, sum(amount) AS total FROM ledger_entries GROUP BY account_id) s "
            f"ON s.account_id = a.id {bwhere} "
            "AND coalesce(b.balance, 0) <> coalesce(s.total, 0)" if bwhere else
            "SELECT a.id, coalesce(b.balance, 0), coalesce(s.total, 0) FROM ledger_accounts a "
            "LEFT JOIN ledger_balances b ON b.account_id = a.id "
            "LEFT JOIN (SELECT account_id, sum(amount) AS total FROM ledger_entries GROUP BY account_id) s "
            "ON s.account_id = a.id WHERE coalesce(b.balance, 0) <> coalesce(s.total, 0)"), params)
    ]
    report.double_reversals = list(session.execute(text(
        "SELECT reverses_transfer_id FROM ledger_transfers WHERE reverses_transfer_id IS NOT NULL "
        "GROUP BY reverses_transfer_id HAVING count(*) > 1")).scalars())
    return report
