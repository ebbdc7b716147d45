"""Console pages for billing items: list, create, the charges of one item."""

from __future__ import annotations

from datetime import date

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select

from meterhub.errors import MeterhubError, ValidationError
from meterhub.extensions import db
from meterhub.tenants.models import Property
from meterhub.tenants.scoping import get_or_404, requested, restrict
from webui.forms import refused
from webui.lookup import picked_all
from webui.util import permission_required

from ..prepaid.models import PrepaidAccount
from .models import BASES, CATEGORIES, MODES, RECURRENCES, BillingCharge, BillingItem
from .service import charge_now, create_item

bp = Blueprint("billing_items", __name__, url_prefix="/billing-items")
#: The new-item form's fields (an error naming one is shown beside it); the service's names → the form's.
FIELDS = ("name", "property_id", "category", "rate", "basis", "recurrence", "day", "anchor_month", "start_date",
          "end_date", "mode", "accounts")
ALIASES = {"account": "accounts"}


def _date(name: str, required: bool = True) -> date | None:
    raw = request.form.get(name, "").strip()
    if not raw and not required:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError as err:
        raise ValidationError(_("Enter a date as YYYY-MM-DD."), {name: "date"}) from err


@bp.route("/")
@permission_required("money.view")
def index(errors: dict[str, str] | None = None):
    items = db.session.execute(restrict(select(BillingItem).order_by(BillingItem.id), BillingItem)).scalars().all()
    props = db.session.execute(restrict(select(Property).order_by(Property.name), Property)).scalars().all()
    return render_template("billing_items/index.html", items=items, properties=props, categories=CATEGORIES,
                           bases=BASES, recurrences=RECURRENCES, modes=MODES, errors=errors or {},
                           form=request.form if errors is not None else {})


@bp.route("/new", methods=["POST"])
@permission_required("account.manage")
def create():
    prop = requested(Property, "property_id", "account.manage")
    form = request.form
    try:
        accounts = picked_all(PrepaidAccount, "account", "accounts", "account_ids", "account.manage",
                              property_id=prop.id)
        item = create_item(db.session, current_user.group_id, prop.id, name=form.get("name", ""),
                           rate=form.get("rate", ""), basis=form.get("basis", "fixed"),
                           category=form.get("category", "custom"), recurrence=form.get("recurrence", "monthly"),
                           day=form.get("day", type=int) or 1, anchor_month=form.get("anchor_month", type=int) or 1,
                           start_date=_date("start_date"), end_date=_date("end_date", required=False),
                           mode=form.get("mode", "deduct"), may_trip=form.get("may_trip") == "1",
                           account_ids=[a.id for a in accounts], actor=current_user.username,
                           operator_id=current_user.id)
    except MeterhubError as err:
        db.session.rollback()
        return index(refused(err, FIELDS, ALIASES)), 400  # the form again as typed, each problem beside its field
    db.session.commit()
    return redirect(url_for("billing_items.item", item_id=item.id))


@bp.route("/<int:item_id>")
@permission_required("money.view")
def item(item_id: int):
    item = get_or_404(BillingItem, item_id)
    charges = db.session.execute(select(BillingCharge, PrepaidAccount.number).join(
        PrepaidAccount, PrepaidAccount.id == BillingCharge.account_id).where(BillingCharge.item_id == item.id)
        .order_by(BillingCharge.due_date.desc(), BillingCharge.account_id).limit(1000)).all()
    return render_template("billing_items/item.html", item=item, charges=charges)


@bp.route("/<int:item_id>/charge-now", methods=["POST"])
@permission_required("account.manage")
def charge(item_id: int):
    """Charge what fell due up to today now, and say what was done."""
    from meterhub.ledger import run_money_transaction
    from meterhub.modules.prepaid.promptly import request_hand_over

    item = get_or_404(BillingItem, item_id, "account.manage", write=True)
    try:
        created = run_money_transaction(db.session, lambda s: charge_now(
            s, item.id, actor=current_user.username, operator_id=current_user.id))
    except MeterhubError as err:
        db.session.rollback()
        flash(str(err), "error")
        return redirect(url_for("billing_items.item", item_id=item_id))
    deducted = [c for c in created if c.status == "deducted"]
    for account_id in sorted({c.account_id for c in deducted}):
        request_hand_over(account_id)  # a fee that reached the trip line switches off now, not in 15 s
    if not created:
        flash(_("%(item)s: nothing is due up to today; every due charge was already made.", item=item.name), "ok")
    else:
        flash(_("%(item)s: %(count)d charges made now — %(deducted)d deducted from wallets, %(billed)d put on "
                "the next bill, %(skipped)d skipped (see the reasons below).", item=item.name, count=len(created),
                deducted=len(deducted), billed=sum(1 for c in created if c.status == "billed"),
                skipped=sum(1 for c in created if c.status == "skipped")), "ok")
    return redirect(url_for("billing_items.item", item_id=item_id))
