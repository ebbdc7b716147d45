"""Price plans (电价/费率方案) in the console: list, detail, create, add a version, assign.

Rules (docs/money.md): a version is never edited; a change is a new version with a later effective date,
so intervals already charged are never repriced. A plan belongs to one property or to the whole group: a
scoped operator sees the group-wide plans and those of their properties, and changes only the latter; only
group-level roles change a group-wide plan. Assignments point at a property, building or room the operator can
see, inside the plan's property (out-of-scope ids answer 404).
"""

from __future__ import annotations

from functools import wraps
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_babel import pgettext
from flask_login import current_user
from sqlalchemy import func, select

from meterhub.errors import ValidationError
from meterhub.extensions import db
from meterhub.tariffs import service as tariffs
from meterhub.tariffs.forms import (
    DEFAULT_TZ,
    VersionForm,
    build_version,
    hhmm,
    parse_effective,
    rate_label,
)
from meterhub.tariffs.models import PLAN_KINDS, RATES, Tariff, TariffAssignment, TariffVersion
from meterhub.tariffs.pricing import MAX_PERIODS, TIER_KINDS, TOU_KINDS
from meterhub.tenants.models import Building, Property, Room
from meterhub.tenants.scoping import find_in_scope, get_or_404, has_permission, requested, restrict, visible_properties, whole_group

from .forms import refused
from .util import permission_required, record

bp = Blueprint("tariffs", __name__, url_prefix="/tariffs")

UTILITIES = ("electricity", "water")
ASSIGN_SCOPES = {"property": Property, "building": Building, "room": Room}
#: Seeing plans needs ``property.view`` and one of these: plans are commercial settings, so counter and field
#: roles (cashier, electrician) do not see them; admins, managers, finance and auditors do.
VIEW_ALSO_ONE_OF = ("tariff.manage", "report.view")


def can_view_tariffs(operator=None) -> bool:
    operator = operator or current_user
    return has_permission(operator, "property.view") and any(has_permission(operator, p) for p in VIEW_ALSO_ONE_OF)


def view_required(view):
    """``property.view`` plus tariff.manage or report.view; otherwise 404 like every hidden page."""

    @permission_required("property.view")
    @wraps(view)
    def wrapper(*args, **kwargs):
        if not can_view_tariffs():
            abort(404)
        return view(*args, **kwargs)

    return wrapper


def kind_label(kind: str) -> str:
    return {"flat": _("Flat"), "tou": _("Time of use"), "tiered": _("Tiered"),
            "tiered_tou": _("Tiered + time of use")}.get(kind, kind)


def utility_label(utility: str) -> str:
    return {"electricity": _("Electricity"), "water": _("Water")}.get(utility, utility)


def _display_tz() -> str:
    """The time zone dates are shown and entered in: the selected property's, else Asia/Shanghai."""
    property_id = session.get("property_id")
    if property_id:
        prop = db.session.execute(restrict(select(Property).where(Property.id == property_id), Property,
                                           permission="property.view")).scalar()
        if prop is not None and prop.timezone:
            return prop.timezone
    return DEFAULT_TZ


def _tz_choices() -> list[str]:
    zones = db.session.execute(restrict(select(Property.timezone).distinct(), Property,
                                        permission="property.view")).scalars()
    return sorted({DEFAULT_TZ, _display_tz(), *(z for z in zones if z)})


def _visible_targets(tariff: Tariff) -> dict[str, list]:
    """Properties, buildings and rooms the operator may see where the plan applies (choices of the assignment
    form): all of them for a group-wide plan, those of its property for a property's plan."""
    out = {}
    for scope, model in ASSIGN_SCOPES.items():
        order = (model.property_id, model.name) if model is Building else (model.property_id, model.number) \
            if model is Room else (model.name,)
        stmt = restrict(select(model).order_by(*order), model, permission="property.view")
        if tariff.property_id is not None:
            stmt = stmt.where((model.id if model is Property else model.property_id) == tariff.property_id)
        out[scope] = list(db.session.execute(stmt).scalars())
    return out


def _target_label(scope: str, obj) -> str:
    if scope == "room":
        return f"{obj.label} {obj.name or ''}".strip()
    return obj.name


def _assignments(tariff_ids: list[int]) -> dict[int, list[tuple[str, str]]]:
    """Visible assignments per plan as (scope label, object label); hidden ones are counted, not named."""
    if not tariff_ids:
        return {}
    rows = db.session.execute(select(TariffAssignment).where(TariffAssignment.tariff_id.in_(tariff_ids))
                              .order_by(TariffAssignment.scope, TariffAssignment.scope_id)).scalars().all()
    labels: dict[tuple[str, int], str] = {}
    for scope, model in ASSIGN_SCOPES.items():
        ids = {r.scope_id for r in rows if r.scope == scope}
        if ids:
            for obj in db.session.execute(restrict(select(model).where(model.id.in_(ids)), model,
                                                   permission="property.view")).scalars():
                labels[(scope, obj.id)] = _target_label(scope, obj)
    scope_names = {"property": _("Property"), "building": _("Building"), "room": _("Room"), "meter": _("Meter")}
    out: dict[int, list[tuple[str, str]]] = {t: [] for t in tariff_ids}
    hidden: dict[int, int] = {}
    for row in rows:
        label = labels.get((row.scope, row.scope_id))
        if label is None:
            hidden[row.tariff_id] = hidden.get(row.tariff_id, 0) + 1
        else:
            out[row.tariff_id].append((scope_names.get(row.scope, row.scope), label))
    for tariff_id, count in hidden.items():
        out[tariff_id].append(("", _("%(n)d outside your properties", n=count)))
    return out


def _current_versions(tariff_ids: list[int]) -> dict[int, TariffVersion]:
    if not tariff_ids:
        return {}
    now = datetime.now(timezone.utc)
    newest = (select(TariffVersion.tariff_id, func.max(TariffVersion.effective_from).label("at"))
              .where(TariffVersion.tariff_id.in_(tariff_ids), TariffVersion.effective_from <= now)
              .group_by(TariffVersion.tariff_id).subquery())
    rows = db.session.execute(select(TariffVersion).join(newest, (TariffVersion.tariff_id == newest.c.tariff_id)
                                                         & (TariffVersion.effective_from == newest.c.at))).scalars()
    return {v.tariff_id: v for v in rows}


def _newest_version(tariff: Tariff) -> TariffVersion | None:
    return db.session.execute(select(TariffVersion).where(TariffVersion.tariff_id == tariff.id)
                              .order_by(TariffVersion.effective_from.desc()).limit(1)).scalar()


@bp.app_context_processor
def _template_helpers() -> dict:
    return {"tariff_rate_label": rate_label, "tariff_kind_label": kind_label, "tariff_utility_label": utility_label,
            "tariff_hhmm": hhmm, "can_view_tariffs": lambda: current_user.is_authenticated and can_view_tariffs()}


# --- views ----------------------------------------------------------------------------------------------------

@bp.route("/")
@view_required
def index():
    plans = db.session.execute(restrict(select(Tariff).order_by(Tariff.utility, Tariff.name), Tariff)).scalars().all()
    ids = [t.id for t in plans]
    return render_template("tariffs/index.html", plans=plans, current=_current_versions(ids),
                           assignments=_assignments(ids), tz=ZoneInfo(_display_tz()), tz_name=_display_tz())


@bp.route("/new", methods=["GET", "POST"])
@permission_required("tariff.manage")
def create():
    name, utility, error = "", "electricity", None
    chosen = None
    if request.method == "POST":
        name = request.form.get("name", "").strip()
        utility = request.form.get("utility", "")
        prop = requested(Property, "property_id", "tariff.manage", required=False)
        chosen = prop.id if prop is not None else None
        if prop is None and not whole_group(current_user):
            error = _("Choose one of your properties: only group-level roles create group-wide price plans.")
            return render_template("tariffs/new.html", name=name, utility=utility, utilities=UTILITIES, error=error,
                                   properties=visible_properties(), chosen=chosen, group_wide=False), 403
        try:
            if not name or len(name) > 100:
                raise ValidationError(_("Enter a name of 1 to 100 characters."), {"name": "required"})
            if utility not in UTILITIES:
                raise ValidationError(_("Choose electricity or water."), {"utility": "unknown"})
            if db.session.execute(select(Tariff.id).where(Tariff.name == name)).first():
                raise ValidationError(_("A price plan named %(name)s exists already.", name=repr(name)), {"name": "taken"})
            tariff = tariffs.create_tariff(db.session, current_user.group_id, name, utility, chosen)
            record("tariff.created", tariff, {"name": name, "utility": utility, "property_id": chosen})
            db.session.commit()
        except ValidationError as err:
            db.session.rollback()
            refused(err, ("name", "property_id", "utility"))  # beside its field (a message naming none: at the top)
            error = True
        else:
            flash(_("Price plan created. Add its first version."), "ok")
            return redirect(url_for("tariffs.add_version", tariff_id=tariff.id))
    return render_template("tariffs/new.html", name=name, utility=utility, utilities=UTILITIES, error=error,
                           properties=visible_properties(), chosen=chosen, group_wide=whole_group(current_user)), \
        (400 if error else 200)


@bp.route("/<int:tariff_id>")
@view_required
def detail(tariff_id: int):
    tariff = get_or_404(Tariff, tariff_id)
    writable = find_in_scope(Tariff, tariff.id, None, "tariff.manage", write=True) is not None
    owner = db.session.get(Property, tariff.property_id) if tariff.property_id else None
    versions = list(reversed(tariff.versions))
    current = _current_versions([tariff.id]).get(tariff.id)
    tz_name = _display_tz()
    return render_template("tariffs/detail.html", tariff=tariff, versions=versions, current=current,
                           assignments=_assignments([tariff.id])[tariff.id], targets=_visible_targets(tariff),
                           target_label=_target_label, tz=ZoneInfo(tz_name), tz_name=tz_name, rates=RATES,
                           tier_kinds=TIER_KINDS, tou_kinds=TOU_KINDS, writable=writable, owner=owner)


VERSION_FIELDS = ("kind", "effective_date", "effective_time", "timezone", *(f"price_{r}" for r in RATES), "periods",
                  "tiers", "tier_period")


@bp.route("/<int:tariff_id>/versions/new", methods=["GET", "POST"])
@permission_required("tariff.manage")
def add_version(tariff_id: int):
    tariff = get_or_404(Tariff, tariff_id, "tariff.manage", write=True)
    newest = _newest_version(tariff)
    error = None
    if request.method == "POST":
        form = VersionForm.from_form(request.form)
        try:
            plan = build_version(form, tariff.utility)
            effective = parse_effective(form.effective_date, form.effective_time, form.timezone)
            if newest is not None and effective <= newest.effective_from:
                shown = newest.effective_from.astimezone(ZoneInfo(form.timezone)).strftime("%Y-%m-%d %H:%M")
                raise ValidationError(_("The effective date must be after the newest version's (%(at)s %(tz)s): "
                                        "versions are never edited and the past is never repriced.",
                                        at=shown, tz=form.timezone), {"effective_date": "before newest"})
            assigned = db.session.execute(select(TariffAssignment.id).where(
                TariffAssignment.tariff_id == tariff.id)).first()
            if assigned and effective < datetime.now(timezone.utc):
                raise ValidationError(_("This plan is in use: a new version must take effect now or later, "
                                        "the past is never repriced."), {"effective_date": "past"})
            version = tariffs.add_version(db.session, tariff, effective, plan)
            record("tariff.version_added", tariff, {
                "version_id": version.id, "effective_from": effective.isoformat(), "timezone": form.timezone,
                "kind": plan.kind, "prices": {r: str(p) for r, p in plan.prices.items()},
                "periods": [[s, e, r] for s, e, r in plan.periods] if plan.kind in TOU_KINDS else [],
                "tiers": [[str(lo), str(sc)] for lo, sc in plan.tiers], "tier_period": plan.tier_period,
            })
            db.session.commit()
        except ValidationError as err:
            db.session.rollback()
            refused(err, VERSION_FIELDS)  # beside its field (a message naming none: at the top)
            error = True
        else:
            flash(_("Version added."), "ok")
            return redirect(url_for("tariffs.detail", tariff_id=tariff.id))
    else:
        form = VersionForm(kind="flat", timezone=_display_tz(),
                           # an example in the reader's words (the parser takes sharp/peak/flat/valley and 尖/峰/平/谷)
                           periods=pgettext("periods", "00:00-08:00 valley\n08:00-12:00 peak\n12:00-17:00 flat\n"
                                                       "17:00-21:00 peak\n21:00-24:00 flat"))
    return render_template("tariffs/version.html", tariff=tariff, form=form, newest=newest, error=error,
                           kinds=PLAN_KINDS if tariff.utility == "electricity" else ("flat", "tiered"),
                           rates=RATES, timezones=_tz_choices(), max_periods=MAX_PERIODS), (400 if error else 200)


@bp.route("/<int:tariff_id>/assign", methods=["POST"])
@permission_required("tariff.manage")
def assign(tariff_id: int):
    tariff = get_or_404(Tariff, tariff_id, "tariff.manage")
    scope, _sep, raw_id = request.form.get("target", "").partition(":")
    model = ASSIGN_SCOPES.get(scope)
    if model is None or not raw_id.isdecimal():
        flash(_("Choose a property, building or room."), "error")
        return redirect(url_for("tariffs.detail", tariff_id=tariff.id))
    target = get_or_404(model, int(raw_id), "tariff.manage")
    if tariff.property_id is not None and tariffs.target_property_id(db.session, scope, target.id) != tariff.property_id:
        abort(404)  # a property's plan is usable only inside that property
    if _newest_version(tariff) is None:
        flash(_("Add a version with prices before assigning this plan."), "error")
        return redirect(url_for("tariffs.detail", tariff_id=tariff.id))
    previous = db.session.execute(select(TariffAssignment.tariff_id).where(
        TariffAssignment.scope == scope, TariffAssignment.scope_id == target.id,
        TariffAssignment.utility == tariff.utility)).scalar()
    try:
        tariffs.assign(db.session, current_user.group_id, scope, target.id, tariff)
    except ValidationError as err:  # pragma: no cover - scope is checked above
        db.session.rollback()
        flash(str(err), "error")
        return redirect(url_for("tariffs.detail", tariff_id=tariff.id))
    record("tariff.assigned", tariff, {"scope": scope, "scope_id": target.id, "utility": tariff.utility,
                                       "previous_tariff_id": previous})
    db.session.commit()
    flash(_("%(plan)s now applies to %(target)s.", plan=tariff.name, target=_target_label(scope, target)), "ok")
    return redirect(url_for("tariffs.detail", tariff_id=tariff.id))
