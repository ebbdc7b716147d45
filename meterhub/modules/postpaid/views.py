"""Console pages for post-paid bills: list, generate, confirm, pay, PDF, unpaid/overdue export."""

from __future__ import annotations

from datetime import date

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from meterhub.errors import MeterhubError, ValidationError
from meterhub.extensions import db
from meterhub.tenants.scoping import get_or_404, requested, restrict
from webui.util import permission_required

from ..prepaid.models import PrepaidAccount
from . import service
from .documents import bill_pdf, unpaid_xlsx
from .models import BILL_STATUSES, Bill, BillLine, BillPayment

bp = Blueprint("postpaid", __name__, url_prefix="/bills")




def _done(bill_id: int | None, err: MeterhubError | None = None):  # noqa: ANN202
    if err is not None:
        db.session.rollback()
        flash(str(err), "error")
    else:
        db.session.commit()
    return redirect(url_for("postpaid.bill", bill_id=bill_id) if bill_id else url_for("postpaid.bills"))


@bp.route("/")
@permission_required("money.view")
def bills():
    stmt = select(Bill).order_by(Bill.id.desc()).limit(500)
    if request.args.get("status") in BILL_STATUSES:
        stmt = stmt.where(Bill.status == request.args["status"])
    rows = db.session.execute(restrict(stmt, Bill)).scalars().all()
    return render_template("postpaid/bills.html", bills=rows, statuses=BILL_STATUSES)


@bp.route("/unpaid.xlsx")
@permission_required("money.view")
def export_unpaid():
    data = unpaid_xlsx(db.session, lambda stmt: restrict(stmt, Bill))
    return Response(data, mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                    headers={"Content-Disposition": "attachment; filename=unpaid-bills.xlsx"})


def _due_days() -> int:
    """The form's due days: blank means the default 15; 0 (due at once) is kept; anything else is refused."""
    raw = (request.form.get("due_days") or "").strip()
    if not raw:
        return 15
    try:
        return int(raw)
    except ValueError as err:
        raise ValidationError("due days must be a whole number from 0 to 120", {"due_days": "number"}) from err


@bp.route("/generate", methods=["POST"])
@permission_required("account.manage")
def generate():
    account = requested(PrepaidAccount, "account_id", "account.manage")
    try:
        try:
            first, end = date.fromisoformat(request.form["start"]), date.fromisoformat(request.form["end"])
        except (KeyError, ValueError) as err:
            raise ValidationError("dates must be YYYY-MM-DD", {"period": "date"}) from err
        if request.form.get("make_postpaid") == "1":
            service.make_postpaid(db.session, current_user.group_id, account.id, due_days=_due_days(),
                                  actor=current_user.username, operator_id=current_user.id)
        bill = service.generate_bill(db.session, current_user.group_id, account.id, first, end,
                                     actor=current_user.username, operator_id=current_user.id)
    except MeterhubError as err:
        return _done(None, err)
    return _done(bill.id)


@bp.route("/<int:bill_id>")
@permission_required("money.view")
def bill(bill_id: int):
    bill = get_or_404(Bill, bill_id)
    lines = db.session.execute(select(BillLine).where(BillLine.bill_id == bill.id).order_by(BillLine.id)).scalars()
    payments = db.session.execute(select(BillPayment).where(BillPayment.bill_id == bill.id)).scalars()
    return render_template("postpaid/bill.html", bill=bill, lines=list(lines), payments=list(payments),
                           account=db.session.get(PrepaidAccount, bill.account_id))


@bp.route("/<int:bill_id>/confirm", methods=["POST"])
@permission_required("account.manage")
def confirm(bill_id: int):
    bill = get_or_404(Bill, bill_id)
    try:
        service.confirm_bill(db.session, current_user.group_id, bill.id, actor=current_user.username,
                             operator_id=current_user.id)
    except MeterhubError as err:
        return _done(bill.id, err)
    return _done(bill.id)


@bp.route("/<int:bill_id>/pay", methods=["POST"])
@permission_required("money.topup")
def pay(bill_id: int):
    bill = get_or_404(Bill, bill_id)
    try:
        service.record_payment(db.session, current_user.group_id, bill.id, request.form.get("amount", ""),
                               request.form.get("channel", "cash"), request.form.get("key", "") or "",
                               actor=current_user.username, operator_id=current_user.id)
    except MeterhubError as err:
        return _done(bill.id, err)
    return _done(bill.id)


@bp.route("/<int:bill_id>/bill.pdf")
@permission_required("money.view")
def pdf(bill_id: int):
    bill = get_or_404(Bill, bill_id)
    return Response(bill_pdf(db.session, bill), mimetype="application/pdf",
                    headers={"Content-Disposition": f"inline; filename={bill.number}.pdf"})
