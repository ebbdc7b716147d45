"""Group settings: which feature modules the group uses, and its top-up limits."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from meterhub.errors import ValidationError
from meterhub.extensions import db
from meterhub.modules.prepaid.limits import set_limits
from meterhub.modules.registry import available_modules, module_enabled
from meterhub.tenants.models import Group

from .forms import refused
from .util import permission_required, record

bp = Blueprint("settings", __name__, url_prefix="/settings")


@bp.route("/", methods=["GET", "POST"])
@permission_required("group.manage")
def index():
    group = db.session.get(Group, current_user.group_id)
    modules = available_modules()
    if request.method == "POST" and request.form.get("section") == "topup_limits":
        return _save_topup_limits(group)
    if request.method == "POST":
        chosen = {key: request.form.get(f"module_{key}") == "1" for key in modules}
        before = {key: module_enabled(group, key) for key in modules}
        group.modules = {**(group.modules or {}), **chosen}
        record("group.modules", group, {"before": before, "after": chosen})
        db.session.commit()
        flash(_("Saved."), "ok")
        return redirect(url_for("settings.index"))
    rows = [(info, module_enabled(group, key)) for key, info in sorted(modules.items())]
    return render_template("settings/index.html", group=group, modules=rows)


def _save_topup_limits(group: Group):
    """The largest single top-up and the confirmation threshold of the group (422 with the reason when invalid)."""
    try:
        set_limits(db.session, group, request.form.get("topup_max", ""), request.form.get("topup_confirm_above", ""),
                   actor=current_user.username, operator_id=current_user.id)
    except ValidationError as err:
        db.session.rollback()
        refused(err, ("topup_max", "topup_confirm_above"), form="topup_limits")  # beside its field
        rows = [(info, module_enabled(group, key)) for key, info in sorted(available_modules().items())]
        return render_template("settings/index.html", group=group, modules=rows), 422
    db.session.commit()
    flash(_("Saved."), "ok")
    return redirect(url_for("settings.index"))
