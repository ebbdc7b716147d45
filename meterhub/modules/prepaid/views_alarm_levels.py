"""Changing an account's low-balance alarm levels, in money and in days of money left (form on the account page:
``prepaid/_alarm_levels_form.html``)."""

from __future__ import annotations

from flask import flash, redirect, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from ...errors import MeterhubError
from ...extensions import db
from webui.forms import refused
from webui.util import permission_required
from .alarm_levels import set_alarm_levels
from .views import _account, account, bp


@bp.route("/accounts/<int:account_id>/alarm-levels", methods=["POST"])
@permission_required("account.manage")
def alarm_levels(account_id: int):
    acc = _account(account_id)
    try:
        f = request.form
        set_alarm_levels(db.session, acc, alarm1=f.get("alarm1", ""), alarm2=f.get("alarm2", ""),
                         alarm1_days=f.get("alarm1_days", ""), alarm2_days=f.get("alarm2_days", ""),
                         actor=current_user.username, operator_id=current_user.id)
        db.session.commit()
        flash(_("Alarm levels saved."), "ok")
    except MeterhubError as err:
        db.session.rollback()
        refused(err, ("alarm1", "alarm1_days", "alarm2", "alarm2_days"), form="alarm-levels")  # beside the field
        return account(acc.id), 400
    return redirect(url_for("prepaid.account", account_id=acc.id))
