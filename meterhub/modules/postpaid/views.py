"""Console pages for post-paid bills: list, generate, confirm, pay, PDF, unpaid/overdue export."""

from __future__ import annotations

from datetime import date

import click

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import select

from meterhub.errors import MeterhubError, ValidationError
from meterhub.extensions import db
from meterhub.tenants.scoping import get_or_404, requested, restrict
from webui.forms import refused
from webui.lookup import picked
from webui.util import permission_required

from ..prepaid.models import PrepaidAccount
from . import service
from .documents import bill_pdf, unpaid_xlsx
from .models import BILL_STATUSES, Bill, BillLine, BillPayment

bp = Blueprint("postpaid", __name__, url_prefix="/bills")
#: The bill run form's fields (an error naming one is shown beside it); the service's names → the form's.
RUN_FIELDS = ("property_id", "building_id", "month")
RUN_ALIASES = {"property": "property_id", "building": "building_id"}
#: The "Generate a bill" form's fields; an account that is not open or is prepaid, or a period already billed, is
#: said beside the account or the first day.
GENERATE_FIELDS = ("account", "start", "end", "make_postpaid", "due_days")
GENERATE_ALIASES = {"status": "account", "period": "start"}
POLICY_FIELDS = ("bill_day", "confirm_on_run", "remind_every_days", "late_fee_daily_rate", "late_fee_cap_rate",
                 "cutoff_days")


def _done(bill_id: int | None, err: MeterhubError | None = None):  # noqa: ANN202
    if err is not None:
        db.session.rollback()
        flash(str(err), "error")
    else:
        db.session.commit()
    return redirect(url_for("postpaid.bill", bill_id=bill_id) if bill_id else url_for("postpaid.bills"))


@bp.route("/")
@permission_required("money.view")
def bills(errors: dict[str, str] | None = None):
    stmt = select(Bill).order_by(Bill.id.desc()).limit(500)
    if request.args.get("status") in BILL_STATUSES:
        stmt = stmt.where(Bill.status == request.args["status"])
    rows = db.session.execute(restrict(stmt, Bill)).scalars().all()
    from meterhub.tenants.models import Building, Property

    props = db.session.execute(restrict(select(Property).order_by(Property.name), Property)).scalars().all()
    buildings = db.session.execute(restrict(select(Building).order_by(Building.name), Building)).scalars().all()
    return render_template("postpaid/bills.html", bills=rows, statuses=BILL_STATUSES, properties=props,
                           buildings=buildings, errors=errors or {}, form=request.form if errors is not None else {})


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
        raise ValidationError(_l("Due days must be a whole number from 0 to 120 (0: due on the day the bill is "
                                 "confirmed); %(value)s is not.", value=raw), {"due_days": "number"}) from err


def _day(field: str) -> date:
    """The form's date ``field`` (YYYY-MM-DD), refused beside it when missing or not a date."""
    try:
        return date.fromisoformat(request.form.get(field, ""))
    except ValueError as err:
        raise ValidationError(_l("Enter a date as YYYY-MM-DD."), {field: "date"}) from err


@bp.route("/generate", methods=["POST"])
@permission_required("account.manage")
def generate():
    try:
        account = picked(PrepaidAccount, "account", "account", "account_id", "account.manage")
        first, end = _day("start"), _day("end")
        if request.form.get("make_postpaid") == "1":
            service.make_postpaid(db.session, current_user.group_id, account.id, due_days=_due_days(),
                                  actor=current_user.username, operator_id=current_user.id)
        bill = service.generate_bill(db.session, current_user.group_id, account.id, first, end,
                                     actor=current_user.username, operator_id=current_user.id)
    except MeterhubError as err:  # an unknown account, a bad date or due days: beside its field, nothing made
        db.session.rollback()
        refused(err, GENERATE_FIELDS, GENERATE_ALIASES)
        return bills(), 400
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
    owed = get_or_404(Bill, bill_id)
    try:
        service.record_payment(db.session, current_user.group_id, owed.id, request.form.get("amount", ""),
                               request.form.get("channel", "cash"), request.form.get("key", "") or "",
                               actor=current_user.username, operator_id=current_user.id)
    except MeterhubError as err:
        db.session.rollback()
        refused(err, ("amount", "channel"))  # the form again as typed, the problem beside its field
        return bill(owed.id), 400
    return _done(owed.id)


@bp.route("/<int:bill_id>/bill.pdf")
@permission_required("money.view")
def pdf(bill_id: int):
    bill = get_or_404(Bill, bill_id)
    return Response(bill_pdf(db.session, bill), mimetype="application/pdf",
                    headers={"Content-Disposition": f"inline; filename={bill.number}.pdf"})


def _run_form() -> tuple:
    """The run form's property, optional building and month (each resolved in the operator's scope)."""
    from meterhub.tenants.models import Building, Property

    from .runs import month_of

    prop = requested(Property, "property_id", "account.manage")
    building = requested(Building, "building_id", "account.manage", required=False)
    if building is not None and building.property_id != prop.id:
        raise ValidationError(_("The building is not in the chosen property."), {"building": "property"})
    return prop, building, month_of(request.form.get("month", ""))


@bp.route("/run", methods=["POST"])
@permission_required("account.manage")
def run():
    """A month's bills for a property or building: preview first (nothing kept), then make them."""
    from .runs import bill_run

    try:
        prop, building, month = _run_form()
        preview = request.form.get("preview") == "1"
        lines = bill_run(db.session, current_user.group_id, prop.id, month,
                         building_id=building.id if building else None, preview=preview,
                         confirm=request.form.get("confirm") == "1", actor=current_user.username,
                         operator_id=current_user.id)
    except MeterhubError as err:
        db.session.rollback()
        return bills(refused(err, RUN_FIELDS, RUN_ALIASES)), 400  # the form again as typed, the problem beside it
    if preview:
        db.session.rollback()
        return render_template("postpaid/run_preview.html", lines=lines, prop=prop, building=building,
                               month=month.isoformat()[:7], form=request.form)
    db.session.commit()
    made = [r for r in lines if r.bill_id and not r.problem]
    flash(_("%(prop)s, %(month)s: %(made)d bills made, %(skipped)d not (see the list).", prop=prop.name,
            month=month.isoformat()[:7], made=len(made), skipped=len(lines) - len(made)), "ok")
    for line in lines:
        if line.problem:
            flash(f"{line.room} {line.customer} ({line.number}): {line.problem}", "warning")
    return redirect(url_for("postpaid.bills"))


@bp.route("/policy/<int:property_id>", methods=["GET", "POST"])
@permission_required("account.manage")
def policy(property_id: int):
    """A property's monthly bill run and overdue policy; a cut-off is confirmed as a switch-off is."""
    from meterhub.tenants.models import Property
    from webui.confirm import confirmation_page

    from .overdue import policy_of, save_policy

    prop = get_or_404(Property, property_id, "account.manage", write=request.method == "POST")
    if request.method == "POST":
        form = request.form
        if (form.get("cutoff_days") or "").strip():
            page = confirmation_page(_("Switch off overdue accounts"), [
                (_("Property"), prop.name), (_("After overdue days"), form.get("cutoff_days"))])
            if page is not None:
                return page
        try:
            save_policy(db.session, current_user.group_id, prop.id, bill_day=form.get("bill_day"),
                        confirm_on_run=form.get("confirm_on_run") == "1",
                        remind_every_days=form.get("remind_every_days"),
                        late_fee_daily_rate=form.get("late_fee_daily_rate"),
                        late_fee_cap_rate=form.get("late_fee_cap_rate"), cutoff_days=form.get("cutoff_days"),
                        actor=current_user.username, operator_id=current_user.id)
        except MeterhubError as err:
            db.session.rollback()
            refused(err, POLICY_FIELDS)  # the form again as typed, each problem beside its field
            return render_template("postpaid/policy.html", prop=prop, policy=policy_of(db.session, prop.id)), 400
        db.session.commit()
        flash(_("Saved."), "ok")
        return redirect(url_for("postpaid.policy", property_id=prop.id))
    return render_template("postpaid/policy.html", prop=prop, policy=policy_of(db.session, prop.id))


@bp.cli.command("run")
@click.option("--property-id", type=int, required=True, help="The property whose post-paid accounts are billed.")
@click.option("--month", required=True, help="The month billed, YYYY-MM.")
@click.option("--building-id", type=int, default=None, help="Only the accounts of this building.")
@click.option("--preview", is_flag=True, help="Show the bills the run would make; make none.")
@click.option("--confirm", is_flag=True, help="Confirm the bills made (book what is owed).")
def run_command(property_id: int, month: str, building_id: int | None, preview: bool, confirm: bool) -> None:
    """``meterhub postpaid run``: a month's post-paid bills for a property (or one of its buildings) in one run."""
    from .runs import run_command_impl

    try:
        click.echo(run_command_impl(property_id, month, building_id, preview, confirm))
    except MeterhubError as err:
        raise click.ClickException(str(err)) from err
