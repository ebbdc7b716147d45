"""Finance reports from the ledger: sales (top-ups, refunds, reversals by day, cashier and channel),
revenue summary by day/month/year, and the arrears list. All need ``report.finance``."""

from __future__ import annotations

from collections.abc import Iterator

from flask_babel import lazy_gettext as _l
from sqlalchemy import text
from sqlalchemy.orm import Session

from .filters import ReportFilter
from .registry import PLACE_FILTERS, Column, ReportDefinition

STREAM = {"yield_per": 2000}
_TRUNC = {"day": "day", "month": "month", "year": "year"}
_FORMAT = {"day": "YYYY-MM-DD", "month": "YYYY-MM", "year": "YYYY"}


#: A wallet's room and "the account this meter is on", for money rows keyed by the wallet ledger account ``la``.
_WALLET_ROOM = "(SELECT pa.room_id FROM prepaid_accounts pa WHERE pa.wallet_account_id = la.id)"
_WALLET_METER = ("la.id IN (SELECT pa.wallet_account_id FROM prepaid_accounts pa JOIN prepaid_meter_state s "
                 "ON s.account_id = pa.id WHERE s.meter_id = :meter_id)")


def _scope(f: ReportFilter) -> tuple[str, dict]:
    where, params = f.place_sql("la.property_id", _WALLET_ROOM, _WALLET_METER)
    params.update(g=f.group_id, start=f.start_at(), end=f.end_at(), tz=f.timezone)
    return where, params


def sales_rows(session: Session, f: ReportFilter) -> Iterator[tuple]:
    """(day, property, cashier, channel, kind, count, amount) of counter money movements."""
    where, params = _scope(f)
    result = session.execute(text(
        "SELECT to_char(t.created_at AT TIME ZONE :tz, 'YYYY-MM-DD') AS day, p.name, t.actor, t.channel, t.kind, "
        "count(*), sum(t.amount) FROM ledger_transfers t JOIN ledger_accounts la ON la.id = t.wallet_account_id "
        "JOIN properties p ON p.id = la.property_id WHERE t.group_id = :g AND t.kind IN ('topup','refund','reversal') "
        f"AND t.created_at >= :start AND t.created_at < :end{where} GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5"
    ).execution_options(**STREAM), params)
    for row in result:
        yield tuple(row)


def revenue_rows(session: Session, f: ReportFilter) -> Iterator[tuple]:
    """(period, top-ups, refunds, reversals, net receipts, consumption charged, transactions) per period."""
    where, params = _scope(f)
    unit = _TRUNC[f.granularity]
    result = session.execute(text(
        f"SELECT to_char(date_trunc('{unit}', t.created_at AT TIME ZONE :tz), '{_FORMAT[f.granularity]}'), "
        "coalesce(sum(e.amount) FILTER (WHERE t.kind = 'topup'), 0), "
        "coalesce(-sum(e.amount) FILTER (WHERE t.kind = 'refund'), 0), "
        "coalesce(-sum(e.amount) FILTER (WHERE t.kind = 'reversal'), 0), "
        "coalesce(sum(e.amount) FILTER (WHERE t.kind IN ('topup', 'refund', 'reversal')), 0), "
        "coalesce(-sum(e.amount) FILTER (WHERE t.kind = 'charge'), 0), "
        "count(DISTINCT t.id) FILTER (WHERE t.kind IN ('topup', 'refund', 'reversal')) "
        "FROM ledger_transfers t JOIN ledger_entries e ON e.transfer_id = t.id "
        "JOIN ledger_accounts la ON la.id = e.account_id "
        "WHERE t.group_id = :g AND t.created_at >= :start AND t.created_at < :end AND la.kind = 'wallet' "
        f"AND t.kind IN ('topup','refund','reversal','charge'){where} GROUP BY 1 ORDER BY 1"), params)
    for row in result:
        yield tuple(row)


def arrears_rows(session: Session, f: ReportFilter) -> Iterator[tuple]:
    """Open accounts at or below their trip line: who owes, how much, since when."""
    where, params = f.place_sql("a.property_id", "a.room_id", "a.id IN (SELECT s.account_id FROM "
                                "prepaid_meter_state s WHERE s.meter_id = :meter_id)")
    result = session.execute(text(
        "SELECT a.number, a.customer_name, a.phone, p.name, coalesce(b.name || '-' || r.number, ''), "
        "coalesce(lb.balance, 0), a.overdraft_limit, "
        "(SELECT max(e.at) FROM prepaid_events e WHERE e.account_id = a.id AND e.kind = 'arrears') "
        "FROM prepaid_accounts a JOIN properties p ON p.id = a.property_id "
        "LEFT JOIN rooms r ON r.id = a.room_id LEFT JOIN buildings b ON b.id = r.building_id "
        "LEFT JOIN ledger_balances lb ON lb.account_id = a.wallet_account_id "
        "WHERE a.group_id = :g AND a.status = 'open' AND coalesce(lb.balance, 0) <= -a.overdraft_limit"
        f"{where} ORDER BY coalesce(lb.balance, 0), a.number").execution_options(**STREAM),
        {"g": f.group_id, **params})
    tz = f.tz
    for row in result:
        since = row[7].astimezone(tz).replace(tzinfo=None) if row[7] else None
        yield (*row[:7], since)


REPORTS = [
    ReportDefinition(
        "sales", _l("Sales: top-ups, refunds, reversals"), "report.finance",
        (Column("day", _l("Day")), Column("property", _l("Property")), Column("cashier", _l("Cashier")),
         Column("channel", _l("Channel")), Column("kind", _l("Kind")), Column("count", _l("Count"), "number"),
         Column("amount", _l("Amount (CNY)"), "money")),
        sales_rows, _l("Counter money movements per day, cashier and channel (a room or meter: its account's).")),
    ReportDefinition(
        "revenue", _l("Revenue summary"), "report.finance",
        (Column("period", _l("Period")), Column("topups", _l("Top-ups"), "money"),
         Column("refunds", _l("Refunds"), "money"), Column("reversals", _l("Reversals"), "money"),
         Column("net", _l("Net receipts"), "money"), Column("consumption", _l("Consumption charged"), "money"),
         Column("transactions", _l("Transactions"), "number")),
        revenue_rows, _l("Receipts and consumption by day, month or year."),
        chart=("period", ("topups", "net", "consumption")), filters=(*PLACE_FILTERS, "granularity")),
    ReportDefinition(
        "arrears", _l("Arrears list"), "report.finance",
        (Column("number", _l("Account")), Column("customer", _l("Customer")), Column("phone", _l("Phone")),
         Column("property", _l("Property")), Column("room", _l("Room")), Column("balance", _l("Balance"), "money"),
         Column("overdraft", _l("Overdraft limit"), "money"), Column("since", _l("In arrears since"), "date")),
        arrears_rows, _l("Open accounts at or below the trip line (now)."), filters=PLACE_FILTERS[1:]),
]
