"""Dashboards: the group's (per property) and one property's; every figure links to the list behind it."""

from __future__ import annotations

from flask import Blueprint, render_template, session
from flask_login import current_user

from ...replica import reads
from ...tenants.models import Property
from ...tenants.scoping import get_or_404, has_permission, property_ids
from webui.console import policy_banner
from webui.util import permission_required
from . import dashboard

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")


def _render(props: list[int] | None, prop: Property | None):
    reading, fresh = reads()  # the read replica when configured; the page says how fresh it is
    figures = dashboard.build(reading, props)
    return render_template("prepaid/dashboard.html", d=figures, prop=prop, fresh=fresh,
                           failing_policies=policy_banner(),
                           money=has_permission(current_user, "money.view"),
                           devices=has_permission(current_user, "device.view"),
                           reports=has_permission(current_user, "report.view"),
                           finance=has_permission(current_user, "report.finance"))


@bp.route("/")
@permission_required("property.view")
def index():
    """The group dashboard of the operator's scope (or of the property chosen in the switcher)."""
    scope = property_ids(current_user)
    chosen = session.get("property_id")
    if chosen is not None and (scope is None or chosen in scope):
        return property_dashboard(chosen)
    return _render(None if scope is None else sorted(scope), None)


@bp.route("/properties/<int:property_id>")
@permission_required("property.view")
def property_dashboard(property_id: int):
    prop = get_or_404(Property, property_id, "property.view")
    return _render([prop.id], prop)
