"""Reports in the console: pick a report, filter, see the table and chart, export to xlsx (rq job),
download; scheduled reports by email."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from flask import (Blueprint, Response, abort, flash, jsonify, redirect, render_template, request,
                   stream_with_context, url_for)
from flask_babel import gettext as _
from flask_login import current_user, login_required
from sqlalchemy import select

from meterhub.devices.models import Meter
from meterhub.errors import ValidationError
from meterhub.extensions import db
from meterhub.i18n import _l
from meterhub.files import StoredFile, iter_chunks
from meterhub.replica import reads
from meterhub.reports import filters as report_filters
from meterhub.reports.exports import create_export, enqueue_export
from meterhub.reports.models import ReportExport, ScheduledReport
from meterhub.reports.registry import ReportDefinition, all_reports, get_report
from meterhub.tenants.models import Building, Group, Property, Room
from meterhub.tenants.scoping import get_or_404, has_permission, property_ids, restrict

from .console import policy_banner
from .labels import label
from .forms import refused
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


def _filter(args: Any, definition: ReportDefinition) -> report_filters.ReportFilter:
    """The operator's filter for this report; objects outside their scope (or group) answer 404, a filter the
    report cannot apply is refused (ValidationError)."""
    group = db.session.get(Group, current_user.group_id)
    f = report_filters.parse(args, current_user.group_id, property_ids(current_user), group.timezone)
    definition.check(f)
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


def _places(f: report_filters.ReportFilter, definition: ReportDefinition) -> dict[str, list[tuple[int, str]]]:
    """Choices for the place filters, each narrowing the next: the buildings in scope (of the chosen property),
    the rooms of the chosen building, the meters of the chosen room."""
    out: dict[str, list[tuple[int, str]]] = {}
    if "building" in definition.filters:
        stmt = restrict(select(Building.id, Property.name, Building.name).join(Property), Building,
                        permission="property.view").order_by(Property.name, Building.name)
        if f.property_id is not None:
            stmt = stmt.where(Building.property_id == f.property_id)
        out["buildings"] = [(i, f"{p} / {b}") for i, p, b in db.session.execute(stmt)]
    building_id = f.building_id
    if building_id is None and f.room_id is not None:
        building_id = db.session.execute(select(Room.building_id).where(Room.id == f.room_id)).scalar()
    if "room" in definition.filters and building_id is not None:
        stmt = restrict(select(Room.id, Room.number, Room.name).where(Room.building_id == building_id), Room,
                        permission="property.view").order_by(Room.number)
        out["rooms"] = [(i, f"{n} {name}".strip()) for i, n, name in db.session.execute(stmt)]
    if "meter" in definition.filters and f.room_id is not None:
        stmt = restrict(select(Meter.id, Meter.name).where(Meter.room_id == f.room_id), Meter).order_by(Meter.id)
        out["meters"] = [(i, name or f"#{i}") for i, name in db.session.execute(stmt)]
    return out


class _Chart:
    """Series for chart.js: the y columns summed per x value over every row of the report (the table shows only
    the first rows, the trend is the whole selection's); rows of different ``chart_split`` values (electricity
    and water) are never added together, and a series that is zero throughout is left out."""

    def __init__(self, definition: ReportDefinition) -> None:
        keys = [c.key for c in definition.columns]
        x, ys = definition.chart
        self.x, self.ys = keys.index(x), [keys.index(y) for y in ys]
        self.split = keys.index(definition.chart_split) if definition.chart_split else None
        self.labels = [str(c.label) for c in definition.columns]
        self.family = definition.chart_split
        self.totals: dict[tuple[str, Any], list[Decimal]] = {}

    def add(self, row: tuple) -> None:
        key = (str(row[self.x]), None if self.split is None else row[self.split])
        acc = self.totals.get(key)
        if acc is None:
            acc = self.totals[key] = [Decimal(0)] * len(self.ys)
        for i, column in enumerate(self.ys):
            value = row[column]
            if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
                acc[i] += Decimal(value) if isinstance(value, float) else value

    def data(self) -> dict[str, Any] | None:
        if not self.totals:
            return None
        xs = sorted({x for x, _ in self.totals})
        groups = sorted({g for _, g in self.totals}, key=str)
        series = []
        for group in groups:
            suffix = "" if group is None or len(groups) == 1 else f" · {label(group, self.family)}"
            for i, column in enumerate(self.ys):
                values = [self.totals.get((x, group)) for x in xs]
                if any(v is not None and v[i] for v in values):
                    series.append({"label": self.labels[column] + suffix,
                                   "data": [None if v is None else round(float(v[i]), 3) for v in values]})
        return {"labels": xs, "series": series} if series else None


@bp.route("/<key>")
@login_required
def view(key: str):
    definition = _definition(key)
    try:
        f = _filter(request.args, definition)
    except ValidationError as err:  # the filters as typed, the problem beside its field; the default selection shown
        refused(err, FILTER_FIELDS)
        f = _filter({}, definition)
    chart = _Chart(definition) if definition.chart else None
    rows: list[tuple] = []
    total = 0
    session, fresh = reads()  # the read replica when configured: the page says how fresh it is
    for row in definition.rows(session, f):
        total += 1
        if chart is not None:
            chart.add(row)
        elif total > PREVIEW_ROWS:
            break  # without a chart, nothing needs the rest
        if total <= PREVIEW_ROWS:
            rows.append(row)
    return render_template("reports/view.html", report=definition, rows=rows, f=f, places=_places(f, definition),
                           more=total > PREVIEW_ROWS, total=total if chart is not None else None,
                           chart=chart.data() if chart is not None else None, fresh=fresh,
                           failing_policies=policy_banner(),
                           levels=report_filters.LEVELS, granularities=report_filters.GRANULARITIES)


@bp.route("/<key>/export", methods=["POST"])
@login_required
def export(key: str):
    definition = _definition(key)
    try:
        f = _filter(request.form, definition)
    except ValidationError:  # the report's page with the filters as typed, the problem beside its field
        typed = {k: v for k, v in request.form.items() if k != "csrf_token" and not k.startswith("_")}
        return redirect(url_for("reports.view", key=key, **typed))
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
    stored = db.session.get(StoredFile, job.file_id) if job.status == "done" and job.file_id else None
    if stored is None:
        abort(404)  # not done, or made before exports were stored in the database (export it again)
    response = Response(stream_with_context(iter_chunks(db.session, stored.id)), mimetype=stored.content_type)
    response.headers["Content-Length"] = str(stored.size)
    response.headers["Content-Disposition"] = f'attachment; filename="{job.report}-{job.id}.xlsx"'
    return response


#: A report's typed filters (its page's GET form, whose Export button posts them); a chosen place the report cannot
#: apply is said at the top.
FILTER_FIELDS = ("start", "end")
SCHEDULE_FIELDS = ("report", "frequency", "hour", "property_id", "recipients")


@bp.route("/schedules", methods=["POST"])
@permission_required("group.manage")
def schedule_create():
    form = request.form
    definition = get_report(form.get("report", ""))
    if definition is None or form.get("frequency") not in ("daily", "monthly"):
        abort(404)
    hour = form.get("hour", "7").strip()
    recipients = [r.strip() for r in form.get("recipients", "").replace(",", "\n").splitlines() if "@" in r]
    params = {k: form.get(k) for k in ("level", "granularity", "utility") if form.get(k)}
    if form.get("property_id", "").isdecimal():
        params["property_id"] = get_or_404(Property, int(form["property_id"]), "property.view").id
    try:
        if not hour.isdecimal() or int(hour) > 23:
            raise ValidationError(_l("Enter a whole number from %(low)d to %(high)d.", low=0, high=23), {"hour": "range"})
        if not recipients:
            raise ValidationError(_l("Give at least one email address."), {"recipients": "required"})
        today = date.today()
        definition.check(report_filters.ReportFilter(current_user.group_id, today, today, property_id=params.get(
            "property_id"), utility=params.get("utility")))
    except ValidationError as err:
        refused(err, SCHEDULE_FIELDS)  # the form again as typed, the problem beside its field
        return index(), 400
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
