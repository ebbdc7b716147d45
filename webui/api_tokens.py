"""Console page of API tokens: a group admin creates a token acting as one operator (role and property
scope) limited to scopes; the token is shown once; revoking takes effect on the next request."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select

from meterhub.api import tokens
from meterhub.errors import MeterhubError, ValidationError
from meterhub.i18n import _l
from meterhub.extensions import db
from meterhub.models import utcnow
from meterhub.tenants.models import Operator
from meterhub.tenants.scoping import requested

from .confirm import confirmation_page
from .forms import refused
from .util import client_ip, permission_required

bp = Blueprint("api_tokens", __name__, url_prefix="/settings/api-tokens")
FIELDS = ("name", "scopes", "expires_days")  # the new-token form's fields that show a message beside them


def _operators() -> list[Operator]:
    return list(db.session.execute(select(Operator).where(Operator.active).order_by(Operator.username)).scalars())


@bp.route("/", methods=["GET", "POST"])
@permission_required("group.manage")
def index():
    created, failed = None, False
    if request.method == "POST":
        form = request.form
        operator = requested(Operator, "operator_id", "group.manage", required=False) or current_user._get_current_object()
        try:
            days = _expires_days(form.get("expires_days", ""))
            new = tokens.create_token(db.session, operator, form.get("name", ""), form.getlist("scopes"),
                                      utcnow() + timedelta(days=days) if days else None,
                                      actor=current_user.username, ip=client_ip())
            db.session.commit()
            created = new.secret
        except MeterhubError as err:
            db.session.rollback()
            refused(err, FIELDS)  # the form again as typed, the problem beside its field
            failed = True
    page = render_template("api_tokens/index.html", tokens=tokens.group_tokens(db.session, current_user.group_id),
                           operators=_operators(), scopes=tokens.SCOPES, created=created,
                           names={o.id: o.username for o in _operators()}, form=request.form if failed else {})
    return (page, 400) if failed else page


def _expires_days(raw: str) -> int | None:
    """The form's days until the token expires: empty is never; else a whole number from 1 to 3650."""
    if not raw.strip():
        return None
    if not raw.strip().isdecimal() or not 1 <= int(raw) <= 3650:
        raise ValidationError(_l("Enter a whole number from %(low)d to %(high)d.", low=1, high=3650),
                              {"expires_days": "range"})
    return int(raw)


@bp.route("/<prefix>/revoke", methods=["POST"])
@permission_required("group.manage")
def revoke(prefix: str):
    token = next((t for t in tokens.group_tokens(db.session, current_user.group_id) if t.prefix == prefix), None)
    if token is None:
        abort(404)
    operator = db.session.get(Operator, token.operator_id)
    page = confirmation_page(_("Revoke"), [(_("Name"), token.name), (_("Prefix"), f"mh_{token.prefix}_…"),
                                           (_("Acts as operator"), operator.username if operator else None)],
                             question=_("Programs using this token stop working at their next request."))
    if page is not None:
        return page
    try:
        tokens.revoke(db.session, current_user.group_id, prefix, actor=current_user.username,
                      operator_id=current_user.id, ip=client_ip())
        db.session.commit()
    except MeterhubError:
        db.session.rollback()
        abort(404)
    flash(_("Token revoked."), "ok")
    return redirect(url_for("api_tokens.index"))
