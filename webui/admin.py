"""Group admins manage operators: role, property scope, password reset, deactivation."""

from __future__ import annotations

import secrets

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select

from meterhub.errors import ValidationError
from meterhub.extensions import db
from meterhub.tenants import service
from meterhub.tenants.auth import end_sessions, hash_password
from meterhub.tenants.models import Operator
from meterhub.tenants.permissions import ROLES
from meterhub.tenants.models import Property
from meterhub.tenants.scoping import get_or_404, requested_all, visible_properties

from .forms import refused
from .util import permission_required, record

bp = Blueprint("admin", __name__, url_prefix="/operators")


def _property_ids() -> list[int]:
    """The properties the form puts in scope, each resolved in the admin's own scope (404 otherwise)."""
    return [p.id for p in requested_all(Property, "property_ids", "operator.manage")]


#: The new-operator form's fields whose problems are shown beside them (the password is never sent back).
NEW_FIELDS = ("username", "name", "role")


@bp.route("/", methods=["GET", "POST"])
@permission_required("operator.manage")
def operators():
    if request.method == "POST":
        form = request.form
        try:
            operator = service.create_operator(
                db.session, current_user.group_id, form.get("username", ""), form.get("password", ""),
                form.get("role", ""), form.get("name", ""), form.get("all_properties") == "1", _property_ids())
        except ValidationError as err:
            db.session.rollback()
            refused(err, NEW_FIELDS)  # the form again as typed (not the password), the problem beside its field
            return _operators_page(), 400
        record("operator.create", operator, {"username": operator.username, "role": operator.role,
                                             "properties": sorted(operator.property_ids)})
        db.session.commit()
        flash(_("Operator created."), "ok")
        return redirect(url_for("admin.operators"))
    return _operators_page()


def _operators_page() -> str:
    rows = db.session.execute(select(Operator).order_by(Operator.username)).scalars().all()
    return render_template("admin/operators.html", operators=rows, roles=ROLES, properties=visible_properties())


@bp.route("/<int:operator_id>", methods=["GET", "POST"])
@permission_required("operator.manage")
def operator_detail(operator_id: int):
    operator = get_or_404(Operator, operator_id)
    if request.method == "POST":
        form = request.form
        action = form.get("action")
        if action == "reset_password":
            password = secrets.token_urlsafe(9)
            operator.password_hash = hash_password(password)
            end_sessions(operator)
            record("operator.reset_password", operator)
            db.session.commit()
            flash(_("New password for %(user)s: %(password)s (shown once).", user=operator.username,
                    password=password), "ok")
        elif action == "toggle_active":
            if operator.id == current_user.id:
                flash(_("You cannot deactivate yourself."), "error")
            else:
                operator.active = not operator.active
                record("operator.update", operator, {"active": operator.active})
                db.session.commit()
        else:
            role = form.get("role", "")
            if role not in ROLES:
                flash(_("Unknown role."), "error")
                return redirect(url_for("admin.operator_detail", operator_id=operator.id))
            before = {"role": operator.role, "all_properties": operator.all_properties,
                      "properties": sorted(operator.property_ids)}
            operator.role = role
            operator.name = (form.get("name") or "").strip()[:100]
            operator.all_properties = form.get("all_properties") == "1"
            try:
                service.set_scopes(db.session, operator, _property_ids())
            except ValidationError as err:
                db.session.rollback()
                flash(str(err), "error")
                return redirect(url_for("admin.operator_detail", operator_id=operator.id))
            record("operator.update", operator, {"before": before, "after": {
                "role": role, "all_properties": operator.all_properties, "properties": sorted(operator.property_ids)}})
            db.session.commit()
            flash(_("Saved."), "ok")
        return redirect(url_for("admin.operator_detail", operator_id=operator.id))
    return render_template("admin/operator.html", operator=operator, roles=ROLES, properties=visible_properties())
