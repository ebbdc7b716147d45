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
from meterhub.i18n import _l
from meterhub.tenants import lookup
from meterhub.tenants.scoping import get_or_404, property_ids, requested, restrict
from webui.forms import field_errors, refused
from webui.util import permission_required, record

from ..prepaid.models import PrepaidAccount
from .models import METHODS, ApportionRule, ApportionRun, ApportionShare
from .posting import post_run, reverse_run
from .rules import create_rule
from .statement import compute, month_bounds, period_bounds

bp = Blueprint("apportion", __name__, url_prefix="/apportion")
#: The new-rule form's fields (an error naming one is shown beside it); the service's names → the form's.
FIELDS = ("name", "property_id", "parent_meter", "sub_meters", "method", "tariff_id", "members", "remainder_account",
          "post_mode")
ALIASES = {"meters": "parent_meter", "tariff": "tariff_id", "ratio": "members"}


def _day(value: str, field: str) -> date:
    """A date of the preview's period, refused beside its field when it is not one."""
    try:
        return date.fromisoformat(value)
    except ValueError as err:
        raise ValidationError(_l("Enter a date as YYYY-MM-DD."), {field: "date"}) from err


def _period(rule: ApportionRule) -> tuple:
    tz = db.session.get(Property, rule.property_id).timezone
    start, end = request.values.get("start"), request.values.get("end")
    if start and end:
        return period_bounds(tz, _day(start, "start"), _day(end, "end"))
    today = date.today()
    year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    return month_bounds(tz, year, month)


@bp.route("/")
@permission_required("money.view")
def rules(errors: dict[str, str] | None = None):
    rows = db.session.execute(restrict(select(ApportionRule).order_by(ApportionRule.id), ApportionRule)).scalars().all()
    props = db.session.execute(restrict(select(Property).order_by(Property.name), Property)).scalars().all()
    tariffs = db.session.execute(restrict(select(Tariff).order_by(Tariff.name), Tariff)).scalars().all()
    parents = lookup.labels_of(db.session, current_user.group_id, "meter", [r.parent_meter_id for r in rows])
    return render_template("apportion/rules.html", rules=rows, properties=props, tariffs=tariffs, methods=METHODS,
                           parents=parents, form=request.form, errors=errors or {})


def _member_key(raw: str) -> tuple[str, str]:
    """``"A00012:2"`` / ``"张三 2"`` → (key, ratio); a key alone has ratio 1."""
    line = raw.strip().replace("：", ":")
    for sep in (":", " "):
        key, found, ratio = line.rpartition(sep)
        if found and key.strip() and ratio.strip().replace(".", "", 1).isdigit():
            return key.strip(), ratio.strip()
    return line, "1"


def _account(key: str, prop: Property) -> lookup.Found:
    """An account of ``prop`` by number or phone, its tenant's name, or its room's label."""
    scope = property_ids(current_user)
    for kind in ("account", "tenant", "room"):
        try:
            found = lookup.resolve(db.session, current_user.group_id, kind, key, property_ids=scope,
                                   property_id=prop.id)
        except ValidationError:
            continue
        if kind != "room":
            return found
        account = db.session.execute(select(PrepaidAccount).where(
            PrepaidAccount.room_id == found.id, PrepaidAccount.status == "open")).scalars().first()
        if account is not None:
            return lookup.Found("account", account.id, account.number, account.number, account.property_id)
    raise ValidationError(_l("%(key)s: no such account, tenant or room in this property.", key=key),
                          {"members": "unknown"})


def rule_form(prop: Property) -> dict:
    """The rule the form describes, every meter and account resolved from the keys people typed or picked, in the
    operator's scope and the rule's property; every key that names nothing is refused beside its field."""
    scope = property_ids(current_user)
    errors: dict[str, str] = {}
    messages: dict[str, list[str]] = {}

    def refuse(field: str, err: ValidationError | str) -> None:
        errors.setdefault(field, "unknown")
        messages.setdefault(field, []).append(str(err))

    def meter(field: str, key: str) -> int | None:
        try:
            return lookup.resolve(db.session, current_user.group_id, "meter", key, property_ids=scope,
                                  property_id=prop.id).id
        except ValidationError as err:
            refuse(field, err)
            return None

    def account(field: str, key: str) -> int | None:
        try:
            return _account(key, prop).id
        except ValidationError as err:
            refuse(field, err)
            return None

    parent = meter("parent_meter", request.form.get("parent_meter", ""))
    subs = [meter("sub_meters", k) for k in lookup.split_keys(request.form.get("sub_meters", ""))]
    members = [(account("members", k), r) for k, r in (_member_key(line) for line in
                                                       request.form.get("members", "").splitlines() if line.strip())]
    remainder = account("remainder_account", request.form["remainder_account"]) \
        if request.form.get("remainder_account", "").strip() else None
    if not members and "members" not in errors:
        refuse("members", _("Add at least one member account."))
    if errors:
        text = {field: " ".join(found) for field, found in messages.items()}
        raise ValidationError(" ".join(text.values()), errors, text)
    return {"parent_meter_id": parent, "sub_meter_ids": subs, "members": members, "remainder_account_id": remainder}


@bp.route("/rules/new", methods=["POST"])
@permission_required("tariff.manage")
def create():
    prop = requested(Property, "property_id", "tariff.manage")
    tariff = requested(Tariff, "tariff_id", "tariff.manage")
    try:
        if tariff.property_id not in (None, prop.id):
            raise ValidationError(_("The price plan %(plan)s belongs to another property.", plan=tariff.name),
                                  {"tariff_id": "property"})
        rule = create_rule(db.session, current_user.group_id, prop.id, name=request.form.get("name", ""),
                           method=request.form.get("method", ""), tariff_id=tariff.id,
                           subtract_sub_meters=request.form.get("subtract") == "1",
                           post_mode=request.form.get("post_mode", "deduct"), actor=current_user.username,
                           operator_id=current_user.id, **rule_form(prop))
    except (MeterhubError, ValueError) as err:
        db.session.rollback()
        return rules(refused(err, FIELDS, ALIASES)), 400  # the form again as typed, each problem beside its field
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
        if field_errors(err, ("start", "end")):
            refused(err, ("start", "end"))  # a bad date of the preview form: beside its field
        else:
            error = str(err)  # the period cannot be apportioned (e.g. no parent reading): said in the preview
    runs = db.session.execute(select(ApportionRun).where(ApportionRun.rule_id == rule.id)
                              .order_by(ApportionRun.id.desc())).scalars().all()
    parent = db.session.get(Meter, rule.parent_meter_id)
    return render_template("apportion/rule.html", rule=rule, statement=statement, error=error, runs=runs,
                           parent=parent, parent_key=lookup.label_of(db.session, rule.group_id, "meter", parent.id))


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
    rule = db.session.get(ApportionRule, run.rule_id)
    parent = db.session.get(Meter, rule.parent_meter_id) if rule is not None else None
    return render_template("apportion/run.html", run=run, shares=shares, rule=rule,
                           utility=parent.utility if parent is not None else "electricity")


@bp.route("/runs/<int:run_id>/reverse", methods=["POST"])
@permission_required("money.reverse")
def reverse(run_id: int):
    posted = get_or_404(ApportionRun, run_id)
    try:
        reverse_run(db.session, current_user.group_id, posted.id, request.form.get("reason", ""),
                    actor=current_user.username, operator_id=current_user.id)
    except MeterhubError as err:
        db.session.rollback()
        # the form again as typed, the problem beside its field (a run that is no longer posted shows no form)
        refused(err, ("reason",) if posted.status == "posted" else ())
        return run(posted.id), 400
    record("apportion.reverse.console", posted)
    db.session.commit()
    flash(_("Reversed."), "ok")
    return redirect(url_for("apportion.run", run_id=posted.id))
