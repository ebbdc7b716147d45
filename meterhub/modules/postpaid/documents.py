"""Bill documents: the PDF bill (in the reader's language, reportlab's built-in CJK font) and the Excel export
of unpaid and overdue bills (headers and statuses translated)."""

from __future__ import annotations

import io
from collections.abc import Iterable

from flask_babel import gettext as _
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen import canvas
from sqlalchemy import select
from sqlalchemy.orm import Session

from ...i18n import _l, shown
from ...labels import label
from ...spreadsheets import sheet_bytes
from ...tenants.models import Property
from ..prepaid.models import PrepaidAccount
from .models import UNPAID, Bill, BillLine

FONT = "STSong-Light"  # a CID font every PDF reader provides: no font file to ship


def _font() -> str:
    if FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(FONT))
    return FONT


def bill_pdf(session: Session, bill: Bill) -> bytes:
    """The bill as a one-or-more page A4 PDF."""
    account = session.get(PrepaidAccount, bill.account_id)
    prop = session.get(Property, bill.property_id)
    lines = list(session.execute(select(BillLine).where(BillLine.bill_id == bill.id).order_by(BillLine.id)).scalars())
    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=A4, invariant=True)
    pdf.setTitle(_("Bill %(bill)s", bill=bill.number))
    font = _font()
    width, height = A4
    y = height - 25 * mm

    def text(x: float, value: str, size: int = 10) -> None:
        pdf.setFont(font, size)
        pdf.drawString(x, y, value)

    text(20 * mm, _("Bill %(bill)s", bill=bill.number), 16)
    y -= 10 * mm
    for name, value in ((_("Property"), prop.name), (_("Account"), account.number),
                        (_("Customer"), account.customer_name or "-"),
                        (_("Period"), f"{bill.period_start} – {bill.period_end}"),
                        (_("Status"), label(bill.status, "bill_status")), (_("Due"), str(bill.due_date or "-"))):
        text(20 * mm, f"{name}: {value}")
        y -= 6 * mm
    y -= 4 * mm
    text(20 * mm, _("Items"), 12)
    y -= 7 * mm
    for line in lines:
        if y < 30 * mm:
            pdf.showPage()
            y = height - 25 * mm
        text(20 * mm, shown(line.description)[:80], 9)
        pdf.setFont(font, 9)
        pdf.drawRightString(width - 20 * mm, y, f"{line.amount:.2f}")
        y -= 6 * mm
    y -= 4 * mm
    for name, value in ((_("Total"), bill.total), (_("Paid"), bill.paid), (_("Outstanding"), bill.outstanding)):
        text(20 * mm, name, 11)
        pdf.drawRightString(width - 20 * mm, y, f"¥{value:.2f}")
        y -= 7 * mm
    pdf.showPage()
    pdf.save()
    return out.getvalue()


UNPAID_HEADER = (_l("Bill number"), _l("Account"), _l("Customer"), _l("Period start"), _l("Period end"),
                 _l("Status"), _l("Total"), _l("Paid"), _l("Outstanding"), _l("Due date"))


def unpaid_rows(session: Session, bills: Iterable[Bill]) -> list[tuple]:
    """Rows of the unpaid-bills export."""
    rows = []
    for bill in bills:
        account = session.get(PrepaidAccount, bill.account_id)
        rows.append((bill.number, account.number, account.customer_name, bill.period_start, bill.period_end,
                     str(label(bill.status, "bill_status")), float(bill.total), float(bill.paid), float(bill.outstanding), bill.due_date))
    return rows


def unpaid_xlsx(session: Session, stmt_filter=None) -> bytes:  # noqa: ANN001
    """Unpaid and overdue bills (``stmt_filter`` narrows the select, e.g. to the operator's scope)."""
    stmt = select(Bill).where(Bill.status.in_(UNPAID)).order_by(Bill.due_date, Bill.id)
    if stmt_filter is not None:
        stmt = stmt_filter(stmt)
    return sheet_bytes(_("Unpaid bills"), [str(h) for h in UNPAID_HEADER], unpaid_rows(session, session.execute(stmt).scalars()))
