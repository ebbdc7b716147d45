"""The live room monitor: search, filters, sort by days left, pages; the grid refreshes itself (htmx polling of the
same URL answers the grid alone), so balances and states change on screen without a reload."""

from __future__ import annotations

from flask import abort, current_app, flash, render_template, request
from sqlalchemy import select

from ...errors import ValidationError
from ...extensions import db
from ...models import utcnow
from ...tenants.models import Building, Floor, Property
from ...tenants.scoping import get_or_404, restrict
from webui.util import permission_required
from . import monitor
from .views import _scope_props, bp

REFRESH_S = 10  # METERHUB_MONITOR_REFRESH_S


def _props() -> list[int] | None:
    """The properties shown: the one asked for (a dashboard link; it must be in scope), else the scope."""
    raw = request.args.get("property_id", "")
    if raw:
        if not raw.isdecimal():
            abort(404)
        return [get_or_404(Property, int(raw), "property.view").id]
    return _scope_props()


@bp.route("/rooms")
@permission_required("money.view")
def rooms():
    props = _props()
    try:
        mq = monitor.parse(request.args, props)
    except ValidationError as err:
        flash(str(err), "error")
        mq = monitor.MonitorQuery(props)
    result = monitor.page_of(db.session, mq)
    args = {k: v for k, v in request.args.items() if k != "page" and v}
    context = {"m": result, "mq": mq, "args": args, "statuses": monitor.STATUSES, "day_status": monitor.day_status,
               "refresh_s": int(current_app.config.get("MONITOR_REFRESH_S", REFRESH_S)), "now": utcnow()}
    if request.headers.get("HX-Request") == "true":
        return render_template("prepaid/_monitor_grid.html", **context)
    buildings = db.session.execute(restrict(
        select(Building.id, Building.name, Property.name.label("property_name")).join(
            Property, Property.id == Building.property_id).order_by(Property.name, Building.name),
        Building, None, "property.view").where(*([Building.property_id.in_(props)] if props is not None else []))
    ).all()
    floors = db.session.execute(select(Floor.level).where(Floor.building_id == mq.building_id).order_by(Floor.level)
                                ).scalars().all() if mq.building_id in {b.id for b in buildings} else []
    return render_template("prepaid/rooms.html", buildings=buildings, floors=floors, **context)
