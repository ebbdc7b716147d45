"""Console pages for apportioning: rules, preview (who pays what and why), post, reverse."""

from __future__ import annotations

from datetime import date

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select

from meterhub.devices.models import Meter
from meterhub.errors import MeterhubError, ValidationError
from meterhub.extensions import db
from meterhub.tariffs.models import Tariff
from meterhub.tenants.models import Property
from meterhub.tenants.scoping import get_or_404, objects_or_404, requested, requested_all, restrict
from webui.util import permission_required, record

from ..prepaid.models import PrepaidAccount
from .models import METHODS, ApportionRule, ApportionRun, ApportionShare
from .posting import post_run, reverse_run
from .rules import create_rule
from .statement import compute, month_bounds, period_bounds

bp = Blueprint("apportion", __name__, url_prefix="/apportion")




def ids(raw: str) -> list[int]:
    """``"1, 2 3"`` → [1, 2, 3]; a non-number is a validation error."""
    try:
        return [int(x) for x in raw.replace(",", " ").split()]
    except ValueError as err:
        raise ValidationError(f"{raw!r} is not a list of ids", {"ids": "numbers"}) from err


def _period(rule: ApportionRule) -> tuple:
    tz = db.session.get(Property, rule.property_id).timezone
    start, end = request.values.get("start"), request.values.get("end")
    try:
        if start and end:
            return period_bounds(tz, date.fromisoformat(start), date.fromisoformat(end))
    except ValueError as err:
        raise ValidationError("dates must be YYYY-MM-DD", {"period": "date"}) from err
    today = date.today()
    year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    return month_bounds(tz, year, month)


@bp.route("/")
@permission_required("money.view")
def rules():
    rows = db.session.execute(restrict(select(ApportionRule).order_by(ApportionRule.id), ApportionRule)).scalars().all()
    props = db.session.execute(restrict(select(Property).order_by(Property.name), Property)).scalars().all()
    tariffs = db.session.execute(restrict(select(Tariff).order_by(Tariff.name), Tariff)).scalars().all()
    return render_template("apportion/rules.html", rules=rows, properties=props, tariffs=tariffs, methods=METHODS)


@bp.route("/rules/new", methods=["POST"])
@permission_required("tariff.manage")
def create():
    prop = requested(Property, "property_id", "tariff.manage")
    # every meter, account and plan the form names is resolved in the operator's scope (404 otherwise)
    parent = requested(Meter, "parent_meter_id", "device.view")
    subs = requested_all(Meter, "sub_meter_ids", "device.view")
    tariff = requested(Tariff, "tariff_id", "tariff.manage")
    remainder = requested(PrepaidAccount, "remainder_account_id", "money.view", required=False)
    try:
        members = [(a, r) for a, _, r in (m.partition(":") for m in request.form.get("members", "").split())]
        members = [(int(a), r or "1") for a, r in members]
        objects_or_404(PrepaidAccount, [a for a, _ in members], "money.view")
        if tariff.property_id not in (None, prop.id):
            raise ValidationError(_("The price plan %(plan)s belongs to another property.", plan=tariff.name))
        rule = create_rule(db.session, current_user.group_id, prop.id, name=request.form.get("name", ""),
                           parent_meter_id=parent.id, sub_meter_ids=[m.id for m in subs],
                           method=request.form.get("method", ""), tariff_id=tariff.id,
                           members=members, remainder_account_id=remainder.id if remainder else None,
                           subtract_sub_meters=request.form.get("subtract") == "1",
                           post_mode=request.form.get("post_mode", "deduct"), actor=current_user.username,
                           operator_id=current_user.id)
    except (MeterhubError, ValueError) as err:
        db.session.rollback()
        flash(str(err), "error")
        return redirect(url_for("apportion.rules"))
    db.session.commit()
    return redirect(url_for("apportion.rule", rule_id=rule.id))


@bp.route("/rules/<int:rule_id>")
@permission_required("money.view")
def rule(rule_id: int):
    rule = get_or_404(ApportionRule, rule_id)
    statement, error = None, ""
    try:
        start, end = _period(rule)
        statement = compute(db.session, current_user.group_id, rule.id, start, end)
    except MeterhubError as err:
        error = str(err)
    runs = db.session.execute(select(ApportionRun).where(ApportionRun.rule_id == rule.id)
                              .order_by(ApportionRun.id.desc())).scalars().all()
    parent = db.session.get(Meter, rule.parent_meter_id)
    return render_template("apportion/rule.html", rule=rule, statement=statement, error=error, runs=runs,
                           parent=parent)


@bp.route("/rules/<int:rule_id>/post", methods=["POST"])
@permission_required("account.manage")
def post(rule_id: int):
    rule = get_or_404(ApportionRule, rule_id)
    try:
        start, end = _period(rule)
        run = post_run(db.session, current_user.group_id, rule.id, start, end, actor=current_user.username,
                       operator_id=current_user.id)
    except MeterhubError as err:
        db.session.rollback()
        flash(str(err), "error")
        return redirect(url_for("apportion.rule", rule_id=rule.id))
    db.session.commit()
    flash(_("Posted %(amount)s.", amount=run.amount), "ok")
    return redirect(url_for("apportion.run", run_id=run.id))


@bp.route("/runs/<int:run_id>")
@permission_required("money.view")
def run(run_id: int):
    run = get_or_404(ApportionRun, run_id)
    shares = db.session.execute(select(ApportionShare, PrepaidAccount.number).join(
        PrepaidAccount, PrepaidAccount.id == ApportionShare.account_id).where(ApportionShare.run_id == run.id)
        .order_by(ApportionShare.account_id)).all()
    return render_template("apportion/run.html", run=run, shares=shares)


@bp.route("/runs/<int:run_id>/reverse", methods=["POST"])
@permission_required("money.reverse")
def reverse(run_id: int):
    run = get_or_404(ApportionRun, run_id)
    try:
        reverse_run(db.session, current_user.group_id, run.id, request.form.get("reason", ""),
                    actor=current_user.username, operator_id=current_user.id)
    except MeterhubError as err:
        db.session.rollback()
        flash(str(err), "error")
        return redirect(url_for("apportion.run", run_id=run.id))
    record("apportion.reverse.console", run)
    db.session.commit()
    flash(_("Reversed."), "ok")
    return redirect(url_for("apportion.run", run_id=run.id))
