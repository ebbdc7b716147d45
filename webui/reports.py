"""Reports in the console: pick a report, filter, see the table and chart, export to xlsx (rq job),
download; scheduled reports by email."""

from __future__ import annotations

from collections import OrderedDict
from decimal import Decimal
from pathlib import Path
from typing import Any

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, send_file, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from sqlalchemy import select

from meterhub.devices.models import Meter
from meterhub.errors import ValidationError
from meterhub.extensions import db
from meterhub.reports import filters as report_filters
from meterhub.reports.exports import create_export, enqueue_export
from meterhub.reports.models import ReportExport, ScheduledReport
from meterhub.reports.registry import ReportDefinition, all_reports, get_report
from meterhub.tenants.models import Building, Group, Property, Room
from meterhub.tenants.scoping import get_or_404, has_permission, property_ids

from .util import permission_required, record

bp = Blueprint("reports", __name__, url_prefix="/reports")
PREVIEW_ROWS = 500


def _visible() -> dict[str, ReportDefinition]:
    return {k: r for k, r in all_reports().items() if has_permission(current_user, r.permission)}


def _definition(key: str) -> ReportDefinition:
    definition = get_report(key)
    if definition is None or not has_permission(current_user, definition.permission):
        abort(404)
    return definition


def _filter(args: Any) -> report_filters.ReportFilter:
    """The operator's filter; objects outside their scope (or group) answer 404."""
    group = db.session.get(Group, current_user.group_id)
    f = report_filters.parse(args, current_user.group_id, property_ids(current_user), group.timezone)
    for model, value in ((Property, f.property_id), (Building, f.building_id), (Room, f.room_id),
                         (Meter, f.meter_id)):
        if value is not None:
            get_or_404(model, value, "property.view" if model is not Meter else None)
    return f


@bp.route("/")
@permission_required("report.view")
def index():
    mine = db.session.execute(select(ReportExport).where(ReportExport.operator_id == current_user.id)
                              .order_by(ReportExport.id.desc()).limit(20)).scalars().all()
    schedules = db.session.execute(select(ScheduledReport).order_by(ScheduledReport.id)).scalars().all() \
        if has_permission(current_user, "group.manage") else []
    return render_template("reports/index.html", reports=_visible(), exports=mine, schedules=schedules)


def _chart(definition: ReportDefinition, rows: list[tuple]) -> dict[str, Any] | None:
    """Series for chart.js: the y columns summed per x value."""
    if not definition.chart or not rows:
        return None
    keys = [c.key for c in definition.columns]
    x, ys = definition.chart
    totals: OrderedDict[str, list[float]] = OrderedDict()
    for row in sorted(rows, key=lambda r: str(r[keys.index(x)])):
        acc = totals.setdefault(str(row[keys.index(x)]), [0.0] * len(ys))
        for i, y in enumerate(ys):
            value = row[keys.index(y)]
            acc[i] += float(value) if isinstance(value, (int, float, Decimal)) else 0.0
    labels = {c.key: str(c.label) for c in definition.columns}
    return {"labels": list(totals), "series": [{"label": labels[y], "data": [round(v[i], 3) for v in totals.values()]}
                                              for i, y in enumerate(ys)]}


@bp.route("/<key>")
@login_required
def view(key: str):
    definition = _definition(key)
    try:
        f = _filter(request.args)
    except ValidationError as err:
        flash(str(err), "error")
        f = _filter({})
    rows = []
    for row in definition.rows(db.session, f):
        rows.append(row)
        if len(rows) > PREVIEW_ROWS:
            break
    return render_template("reports/view.html", report=definition, rows=rows[:PREVIEW_ROWS],
                           more=len(rows) > PREVIEW_ROWS, f=f, chart=_chart(definition, rows[:PREVIEW_ROWS]),
                           levels=report_filters.LEVELS, granularities=report_filters.GRANULARITIES)


@bp.route("/<key>/export", methods=["POST"])
@login_required
def export(key: str):
    definition = _definition(key)
    try:
        f = _filter(request.form)
    except ValidationError as err:
        flash(str(err), "error")
        return redirect(url_for("reports.view", key=key))
    job = create_export(db.session, current_user.group_id, current_user.id, definition.key, f)
    record("report.export", job, {"report": definition.key, "params": f.to_params()})
    db.session.commit()
    enqueue_export(job.id)
    return redirect(url_for("reports.export_status", export_id=job.id))


def _my_export(export_id: int) -> ReportExport:
    job = db.session.execute(select(ReportExport).where(ReportExport.id == export_id,
                                                        ReportExport.operator_id == current_user.id)).scalar()
    if job is None:
        abort(404)
    return job


@bp.route("/exports/<int:export_id>")
@permission_required("report.view")
def export_status(export_id: int):
    job = _my_export(export_id)
    if request.args.get("format") == "json":
        return jsonify(id=job.id, status=job.status, rows=job.rows, error=job.error,
                       download=url_for("reports.download", export_id=job.id) if job.status == "done" else None)
    return render_template("reports/export.html", job=job, report=get_report(job.report))


@bp.route("/exports/<int:export_id>/download")
@permission_required("report.view")
def download(export_id: int):
    job = _my_export(export_id)
    if job.status != "done" or not job.path or not Path(job.path).exists():
        abort(404)
    return send_file(job.path, as_attachment=True, download_name=f"{job.report}-{job.id}.xlsx",
                     mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")


@bp.route("/schedules", methods=["POST"])
@permission_required("group.manage")
def schedule_create():
    form = request.form
    if get_report(form.get("report", "")) is None or form.get("frequency") not in ("daily", "monthly"):
        abort(404)
    hour = form.get("hour", "7")
    recipients = [r.strip() for r in form.get("recipients", "").replace(",", "\n").splitlines() if "@" in r]
    if not hour.isdigit() or int(hour) > 23 or not recipients:
        flash(_("Give an hour from 0 to 23 and at least one email address."), "error")
        return redirect(url_for("reports.index"))
    params = {k: form.get(k) for k in ("level", "granularity", "utility") if form.get(k)}
    if form.get("property_id", "").isdigit():
        params["property_id"] = get_or_404(Property, int(form["property_id"]), "property.view").id
    schedule = ScheduledReport(group_id=current_user.group_id, report=form["report"], params=params,
                               frequency=form["frequency"], hour=int(hour), recipients=recipients,
                               created_by=current_user.id, last_error="")
    db.session.add(schedule)
    db.session.flush()
    record("report.schedule", schedule, {"report": schedule.report, "frequency": schedule.frequency})
    db.session.commit()
    flash(_("Scheduled."), "ok")
    return redirect(url_for("reports.index"))


@bp.route("/schedules/<int:schedule_id>/delete", methods=["POST"])
@permission_required("group.manage")
def schedule_delete(schedule_id: int):
    schedule = get_or_404(ScheduledReport, schedule_id)
    record("report.unschedule", schedule, {"report": schedule.report})
    db.session.delete(schedule)
    db.session.commit()
    return redirect(url_for("reports.index"))
