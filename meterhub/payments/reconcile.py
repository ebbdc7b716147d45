"""Reconciliation: the provider's records against our ledger, per channel and period.

Each line is ``matched``, ``missing_in_ledger`` (the provider has money we never credited),
``missing_at_provider`` (we credited money the provider does not know), ``amount_mismatch`` or
``unapplied`` (received but not credited, e.g. the account was closed: refund it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..ledger.models import Transfer
from .models import PaymentChannel, PaymentOrder
from .providers import ProviderRecord, get_provider


@dataclass(frozen=True)
class ReconLine:
    channel: str
    txn_id: str
    out_trade_no: str
    provider_amount: Decimal | None
    ledger_amount: Decimal | None
    status: str
    receipt_no: str


def reconcile(session: Session, channel: PaymentChannel, records: list[ProviderRecord], start: datetime,
              end: datetime) -> list[ReconLine]:
    """Compare ``records`` with the orders and ledger transfers of ``channel`` paid in ``[start, end)``."""
    ours = {o.provider_txn_id: o for o in session.execute(select(PaymentOrder).where(
        PaymentOrder.channel_id == channel.id, PaymentOrder.provider_txn_id.is_not(None),
        PaymentOrder.paid_at >= start, PaymentOrder.paid_at < end)).scalars()}
    transfers = {t.id: t for t in session.execute(select(Transfer).where(
        Transfer.id.in_([o.transfer_id for o in ours.values() if o.transfer_id]))).scalars()}
    lines = []
    seen = set()
    for record in records:
        seen.add(record.txn_id)
        order = ours.get(record.txn_id)
        transfer = transfers.get(order.transfer_id) if order and order.transfer_id else None
        if order is None:
            status = "missing_in_ledger"
        elif order.state == "unapplied":
            status = "unapplied"
        elif transfer is None:
            status = "missing_in_ledger"
        elif transfer.amount != record.amount:
            status = "amount_mismatch"
        else:
            status = "matched"
        lines.append(ReconLine(channel.name, record.txn_id, record.out_trade_no, record.amount,
                               transfer.amount if transfer else None, status, transfer.receipt_no if transfer else ""))
    for txn_id, order in ours.items():
        if txn_id not in seen:
            transfer = transfers.get(order.transfer_id) if order.transfer_id else None
            lines.append(ReconLine(channel.name, txn_id, order.out_trade_no, None,
                                   transfer.amount if transfer else None, "missing_at_provider",
                                   transfer.receipt_no if transfer else ""))
    return lines


def _rows(session: Session, f) -> Iterator[tuple]:  # noqa: ANN001  (ReportFilter)
    from .orders import channel_view

    start, end = f.start_at(), f.end_at()
    channels = session.execute(select(PaymentChannel).where(PaymentChannel.group_id == f.group_id)
                               .order_by(PaymentChannel.id)).scalars().all()
    for channel in channels:
        records = get_provider(channel.provider).records(session, channel_view(channel), start, end)
        for line in reconcile(session, channel, records, start, end):
            yield (line.channel, line.txn_id, line.out_trade_no, line.provider_amount, line.ledger_amount,
                   line.receipt_no, line.status)


def report_definition():  # noqa: ANN201
    """The reconciliation report for the reports console (finance permission)."""
    from ..reports.registry import Column, ReportDefinition

    return ReportDefinition(
        key="payments_reconciliation", name=_l("Online payments reconciliation"), permission="report.finance",
        columns=(Column("channel", _l("Channel")), Column("txn_id", _l("Provider transaction")),
                 Column("out_trade_no", _l("Order")), Column("provider_amount", _l("Provider amount"), "money"),
                 Column("ledger_amount", _l("Ledger amount"), "money"), Column("receipt_no", _l("Receipt")),
                 Column("status", _l("Status"))),
        rows=_rows, description=_l("Provider records against ledger top-ups, per transaction"),
        filters=("period",))
