"""The audit log in the console: filter, verify the hash chain, export."""

from __future__ import annotations

import io
from datetime import datetime

from flask import Blueprint, Response, render_template, request
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select

from meterhub.extensions import db
from meterhub.request_input import page_number
from meterhub.spreadsheets import CsvWriter
from meterhub.tenants.audit import AuditEntry, verify_chain

from .util import permission_required

bp = Blueprint("audit", __name__, url_prefix="/audit")


def _filtered():
    stmt = select(AuditEntry).order_by(AuditEntry.id.desc())
    args = request.args
    if args.get("action"):
        stmt = stmt.where(AuditEntry.action.startswith(args["action"].strip()))
    if args.get("actor"):
        stmt = stmt.where(AuditEntry.actor == args["actor"].strip().lower())
    for name, op in (("from", "__ge__"), ("to", "__le__")):
        try:
            when = datetime.fromisoformat(args.get(name, ""))
        except ValueError:
            continue
        stmt = stmt.where(getattr(AuditEntry.at, op)(when))
    return stmt


@bp.route("/")
@permission_required("audit.view")
def index():
    page = page_number()
    rows = db.session.execute(_filtered().limit(101).offset((page - 1) * 100)).scalars().all()
    report = verify_chain(db.session, current_user.group_id) if request.args.get("verify") else None
    return render_template("audit/index.html", entries=rows[:100], page=page, has_next=len(rows) > 100,
                           report=report)


@bp.route("/export.csv")
@permission_required("audit.view")
def export():
    buffer = io.StringIO()
    writer = CsvWriter(buffer)
    writer.writerow([_("Entry"), _("Time"), _("Operator"), _("Action"), _("Object"), _("Object id"), _("Detail"), "IP",
                     _("Chain hash")])
    for e in db.session.execute(_filtered()).scalars().yield_per(1000):
        writer.writerow([e.id, e.at.isoformat(), e.actor, e.action, e.object_type, e.object_id, e.detail, e.ip, e.hash])
    return Response(buffer.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": "attachment; filename=audit.csv"})
