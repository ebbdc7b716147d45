"""Console pages for batch operations: create (now or scheduled, list or Excel), progress, retry, cancel, export."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select

from meterhub.errors import MeterhubError, ValidationError
from meterhub.extensions import db
from meterhub.tariffs.models import Tariff
from meterhub.tenants.models import Property
from meterhub.tenants import lookup
from meterhub.tenants.scoping import get_or_404, has_permission, property_ids, requested, restrict
from webui.confirm import confirmation_page, confirmed
from webui.format import when
from webui.forms import refused
from webui.labels import label
from webui.util import permission_required

from .actions import ACTIONS, validate_params
from .export import results_rows, results_xlsx
from .models import Batch
from .selection import keys_from_excel, select_meters
from .service import cancel_batch, create_batch, progress, retry_failed, start_batch, sync_batch

bp = Blueprint("batch", __name__, url_prefix="/batch")
#: Actions that also need a money or tariff permission on top of ``batch.run``.
EXTRA_PERMISSION = {"topup": "money.topup", "set_tariff": "tariff.manage", "push_price": "tariff.manage"}
#: The new-batch form's fields: an error naming one is shown beside it (an empty selection, which several fields
#: make, stays at the top).
FIELDS = ("property_id", "building", "floor", "status", "meters", "action", "tariff_id", "alarm1", "alarm2",
          "overdraft", "limit_kw", "amount", "at")


def _enqueue(command_ids: list[int]) -> None:
    from meterhub.commands.worker import enqueue

    try:
        enqueue(command_ids)
    except Exception:  # Redis down: the periodic dispatcher re-enqueues queued commands
        flash(_("Commands are queued; the dispatcher will send them when the queue is reachable."), "warning")


def _criteria(form, prop: Property) -> dict:  # noqa: ANN001
    """The selection the form describes: building and floor as people name them (``A``, ``A/3``), resolved in the
    operator's scope and ``prop`` (an unknown or out-of-scope one is refused with its name); meter serials, room
    labels and account numbers typed or in an Excel list, carried as ``keys`` (those that match nothing are listed
    on the confirmation page before anything runs)."""
    criteria: dict = {}
    for field, kind in (("building", "building"), ("floor", "floor")):
        if form.get(field, "").strip():
            criteria[f"{kind}_id"] = lookup.resolve(db.session, current_user.group_id, kind, form[field],
                                                    property_ids=property_ids(current_user), property_id=prop.id).id
    if form.get("status"):
        criteria["status"] = form["status"]
    keys: list[str] = []
    upload = request.files.get("file")
    if upload and upload.filename:
        keys += keys_from_excel(upload.read())
    keys += lookup.split_keys(form.get("meters", ""))
    if form.get("keys"):  # the list, carried by the confirmation page
        keys = [k for k in form["keys"].splitlines() if k.strip()]
    if keys:
        criteria["keys"] = keys
    return criteria


def _confirm_run(prop: Property, action: str, criteria: dict, at: datetime | None) -> str | None:
    """The confirmation page of a batch (property, action, how many meters it selects, when), or None once
    confirmed; an uploaded list travels in the page as ``keys``."""
    if confirmed():
        return None
    chosen = select_meters(db.session, current_user.group_id, prop.id, criteria)
    keys = [("keys", "\n".join(criteria["keys"]))] if criteria.get("keys") and not request.form.get("keys") else []
    return confirmation_page(_("Run the batch"), [
        (_("Property"), prop.name), (_("Action"), label(action, "batch_action")),
        (_("Meters"), _("%(n)d meters", n=len(chosen.meter_ids))),
        (_("Not found in this property (left out)"), ", ".join(chosen.unmatched[:50])
         + (_(" and %(n)d more", n=len(chosen.unmatched) - 50) if len(chosen.unmatched) > 50 else "") or None),
        (_("Run at"), when(at) if at else _("now"))], extra_fields=keys)


@bp.route("/")
@permission_required("batch.run")
def index(errors: dict[str, str] | None = None):
    batches = db.session.execute(restrict(select(Batch).order_by(Batch.id.desc()).limit(200), Batch)).scalars().all()
    props = db.session.execute(restrict(select(Property).order_by(Property.name), Property)).scalars().all()
    tariffs = db.session.execute(restrict(select(Tariff).order_by(Tariff.name), Tariff)).scalars().all()
    return render_template("batch/index.html", batches=batches, properties=props, actions=ACTIONS, tariffs=tariffs,
                           errors=errors or {}, form=request.form if errors is not None else {})


@bp.route("/new", methods=["POST"])
@permission_required("batch.run")
def create():
    prop = requested(Property, "property_id", "batch.run")
    action = request.form.get("action", "")
    if action in EXTRA_PERMISSION and not has_permission(current_user, EXTRA_PERMISSION[action]):
        abort(404)
    tariff = requested(Tariff, "tariff_id", required=False)
    if tariff is not None and tariff.property_id not in (None, prop.id):
        abort(404)  # a plan of another property is not usable here
    params = {k: request.form.get(k, "") for k in ("tariff_id", "alarm1", "alarm2", "overdraft", "limit_kw",
                                                    "amount", "channel") if request.form.get(k)}
    try:
        at = None
        if request.form.get("at"):
            try:
                at = datetime.fromisoformat(request.form["at"]).replace(tzinfo=ZoneInfo(prop.timezone))
            except ValueError as err:
                raise ValidationError(_("Enter a date and time as YYYY-MM-DD HH:MM."), {"at": "time"}) from err
        validate_params(db.session, current_user.group_id, action, params)  # a bad value is refused before asking
        criteria = _criteria(request.form, prop)
        page = _confirm_run(prop, action, criteria, at)
        if page is not None:
            return page
        batch = create_batch(db.session, current_user.group_id, prop.id, action, params, criteria,
                             at=at, actor=current_user.username, operator_id=current_user.id)
        command_ids = start_batch(db.session, batch) if at is None else []
    except MeterhubError as err:
        db.session.rollback()
        return index(refused(err, FIELDS)), 400  # the form again as typed, each problem beside its field
    db.session.commit()
    _enqueue(command_ids)
    what = label(batch.action, "batch_action")
    if at is None:
        flash(_("%(what)s started on %(n)d meters of %(prop)s; each meter's result fills in below as it answers.",
                what=what, n=batch.total, prop=prop.name), "ok")
    else:
        flash(_("%(what)s on %(n)d meters of %(prop)s is scheduled for %(at)s.", what=what, n=batch.total,
                prop=prop.name, at=when(at)), "ok")
    return redirect(url_for("batch.show", batch_id=batch.id))


@bp.route("/<int:batch_id>")
@permission_required("batch.run")
def show(batch_id: int):
    batch = get_or_404(Batch, batch_id)
    counts = sync_batch(db.session, batch) if batch.status == "running" else progress(db.session, batch.id)
    db.session.commit()
    rows = results_rows(db.session, batch.id)[:2000]
    from meterhub.commands.models import Command
    from meterhub.commands.outlook import outlook

    commands = db.session.execute(select(Command).where(Command.id.in_([r[6] for r in rows if r[6]]))).scalars().all()
    return render_template("batch/show.html", batch=batch, counts=counts, rows=rows,
                           notes=outlook(db.session, commands))


@bp.route("/<int:batch_id>/retry", methods=["POST"])
@permission_required("batch.run")
def retry(batch_id: int):
    batch = get_or_404(Batch, batch_id)
    page = confirmation_page(_("Retry failed"), [
        (_("Batch"), f"#{batch.id}"), (_("Action"), label(batch.action, "batch_action")),
        (_("Meters"), _("%(n)d meters", n=progress(db.session, batch.id).get("failed", 0)))])
    if page is not None:
        return page
    try:
        command_ids = retry_failed(db.session, batch, actor=current_user.username, operator_id=current_user.id)
    except MeterhubError as err:
        db.session.rollback()
        flash(str(err), "error")
        return redirect(url_for("batch.show", batch_id=batch.id))
    db.session.commit()
    _enqueue(command_ids)
    return redirect(url_for("batch.show", batch_id=batch.id))


@bp.route("/<int:batch_id>/cancel", methods=["POST"])
@permission_required("batch.run")
def cancel(batch_id: int):
    batch = get_or_404(Batch, batch_id)
    try:
        cancel_batch(db.session, batch, actor=current_user.username, operator_id=current_user.id)
    except MeterhubError as err:
        db.session.rollback()
        flash(str(err), "error")
        return redirect(url_for("batch.show", batch_id=batch.id))
    db.session.commit()
    return redirect(url_for("batch.show", batch_id=batch.id))


@bp.route("/<int:batch_id>/results.xlsx")
@permission_required("batch.run")
def export(batch_id: int):
    batch = get_or_404(Batch, batch_id)
    return Response(results_xlsx(db.session, batch),
                    mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                    headers={"Content-Disposition": f"attachment; filename=batch-{batch.id}.xlsx"})
