"""Console pages: dashboard, property switcher, properties, buildings, floors and rooms."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from sqlalchemy import func, select

from meterhub.devices.models import Device, Gateway, Meter
from meterhub.errors import ValidationError
from meterhub.extensions import db
from meterhub.i18n import _l
from meterhub.replica import reads
from meterhub.request_input import page_number
from meterhub.tenants import service
from meterhub.tenants.models import Building, Floor, Property, Room
from meterhub.tenants.scoping import get_or_404, has_permission, restrict
from meterhub.timeseries.policies import failing_policies

from .forms import refused
from .util import permission_required, record

bp = Blueprint("console", __name__)


def _count(model: type) -> int:
    session, _fresh = reads()
    return session.execute(restrict(select(func.count()).select_from(model), model, None, "property.view")).scalar()


def policy_banner() -> list[dict]:
    """Failing TimescaleDB policies, for operators who read reports or manage the group (their numbers depend on
    the policies; nothing in the group's hands can fix them, so a banner and not an alarm per meter)."""
    if not (has_permission(current_user, "report.view") or has_permission(current_user, "group.manage")):
        return []
    return failing_policies(db.session)


@bp.route("/")
@login_required
def dashboard():
    view = current_app.view_functions.get("dashboard.index")
    if view is not None:  # the prepaid module's dashboard: money, usage, levels, alarms (these counts otherwise)
        return view()
    counts = {
        "properties": _count(Property),
        "rooms": _count(Room),
        "gateways": _count(Gateway),
        "devices": _count(Device),
        "meters": _count(Meter),
    }
    return render_template("console/dashboard.html", counts=counts, fresh=reads()[1],
                           failing_policies=policy_banner())


@bp.route("/switch-property", methods=["POST"])
@login_required
def switch_property():
    value = request.form.get("property_id", "")
    if value.isdecimal():
        get_or_404(Property, int(value), "property.view")
        session["property_id"] = int(value)
    else:
        session.pop("property_id", None)
    return redirect(request.referrer if request.referrer and request.referrer.startswith(request.host_url) else url_for("console.dashboard"))


@bp.route("/properties", methods=["GET", "POST"])
@permission_required("property.view")
def properties():
    if request.method == "POST":
        return _create_property()
    return _properties_page()


def _properties_page() -> str:
    rows = db.session.execute(
        restrict(select(Property).order_by(Property.name), Property, None, "property.view")
    ).scalars().all()
    room_counts = dict(db.session.execute(
        restrict(select(Room.property_id, func.count()).group_by(Room.property_id), Room)
    ).all())
    return render_template("console/properties.html", properties=rows, room_counts=room_counts)


@permission_required("group.manage")
def _create_property():
    from flask_login import current_user

    form = request.form
    try:
        prop = service.create_property(db.session, current_user.group_id, form.get("name"), form.get("code"),
                                       form.get("address", ""), form.get("timezone") or "Asia/Shanghai",
                                       _interval(form.get("reading_interval_min"), 30))
    except ValidationError as err:
        db.session.rollback()
        refused(err, ("name", "code", "address", "reading_interval_min"))  # the form again, the problem beside it
        return _properties_page(), 400
    record("property.create", prop, {"name": prop.name, "code": prop.code})
    db.session.commit()
    flash(_("Property created."), "ok")
    return redirect(url_for("console.property_detail", property_id=prop.id))


@bp.route("/properties/<int:property_id>", methods=["GET", "POST"])
@permission_required("property.view")
def property_detail(property_id: int):
    prop = get_or_404(Property, property_id, "property.view")
    if request.method == "POST":
        return _edit_property(prop)
    return _property_page(prop)


def _interval(raw: str | None, default: int) -> int:
    """The form's reading interval in minutes (blank: ``default``); refused beside the field unless 1 to 1440."""
    raw = (raw or "").strip()
    if not raw:
        return default
    if not raw.isdecimal() or not 1 <= int(raw) <= 1440:
        raise ValidationError(_l("Enter a whole number from %(low)d to %(high)d.", low=1, high=1440),
                              {"reading_interval_min": "range"})
    return int(raw)


def _property_page(prop: Property) -> str:
    stats = dict(db.session.execute(
        select(Room.building_id, func.count()).where(Room.property_id == prop.id).group_by(Room.building_id)
    ).all())
    return render_template("console/property.html", prop=prop, room_counts=stats)


@permission_required("property.manage")
def _edit_property(prop: Property):
    form = request.form
    if form.get("action") == "add_building":
        try:
            building = service.create_building(db.session, prop, form.get("name"))
        except ValidationError as err:
            db.session.rollback()
            refused(err, ("name",), form="add_building")  # the form again as typed, the problem beside its field
            return _property_page(prop), 400
        record("building.create", building, {"name": building.name, "property_id": prop.id})
        db.session.commit()
        flash(_("Building created."), "ok")
        return redirect(url_for("console.property_detail", property_id=prop.id))
    before = {"name": prop.name, "address": prop.address, "reading_interval_min": prop.reading_interval_min}
    try:
        name = service._required(form.get("name"), "name", _l("Property name"))
        interval = _interval(form.get("reading_interval_min"), prop.reading_interval_min)
    except ValidationError as err:
        db.session.rollback()
        refused(err, ("name", "address", "reading_interval_min"), form="edit")  # the form again, the problem beside it
        return _property_page(prop), 400
    prop.name, prop.address, prop.reading_interval_min = name, (form.get("address") or "").strip(), interval
    record("property.update", prop, {"before": before, "after": {"name": prop.name, "address": prop.address,
                                                                  "reading_interval_min": interval}})
    db.session.commit()
    flash(_("Saved."), "ok")
    return redirect(url_for("console.property_detail", property_id=prop.id))


#: The building page's two forms (by their posted ``action``) and their fields.
BUILDING_FIELDS = {"bulk_rooms": ("floor_from", "floor_to", "room_from", "room_to", "area_m2", "kind"),
                   "add_room": ("level", "number", "name", "area_m2")}


@bp.route("/buildings/<int:building_id>", methods=["GET", "POST"])
@permission_required("property.view")
def building_detail(building_id: int):
    building = get_or_404(Building, building_id, "property.view")
    if request.method == "POST":
        return _building_action(building)
    return render_template("console/building.html", building=building)


def _level(raw: str | None) -> int:
    """The new room's floor level, refused beside its field unless a whole number."""
    try:
        return int((raw or "1").strip())
    except ValueError as err:
        raise ValidationError(_l("Enter a whole number, e.g. 3."), {"level": "number"}) from err


@permission_required("property.manage")
def _building_action(building: Building):
    form = request.form
    try:
        if form.get("action") == "bulk_rooms":
            result = service.bulk_create_rooms(db.session, building, form.get("floor_from"), form.get("floor_to"),
                                               form.get("room_from", ""), form.get("room_to", ""),
                                               form.get("area_m2") or "0", form.get("kind") or "shop")
            record("room.bulk_create", building, {"created": len(result.created), "skipped": result.skipped[:50]})
            message = _("%(created)d rooms created, %(skipped)d existed already.",
                        created=len(result.created), skipped=len(result.skipped))
        elif form.get("action") == "add_room":
            floor = service.ensure_floor(db.session, building, _level(form.get("level")))
            room = service.create_room(db.session, floor, form.get("number"), form.get("name", ""),
                                       form.get("area_m2") or "0", form.get("kind") or "shop")
            record("room.create", room, {"number": room.number, "building_id": building.id})
            message = _("Room created.")
        else:
            return redirect(url_for("console.building_detail", building_id=building.id))
    except ValidationError as err:
        db.session.rollback()
        refused(err, BUILDING_FIELDS[form.get("action")])  # the form again as typed, the problem beside its field
        return render_template("console/building.html", building=building), 400
    db.session.commit()
    flash(message, "ok")
    return redirect(url_for("console.building_detail", building_id=building.id))


@bp.route("/rooms")
@permission_required("property.view")
def rooms():
    stmt = restrict(select(Room).join(Floor).join(Building).order_by(Building.name, Floor.level, Room.number),
                    Room, None, "property.view")
    if session.get("property_id"):
        stmt = stmt.where(Room.property_id == session["property_id"])
    q = request.args.get("q", "").strip()
    if q:
        stmt = stmt.where(Room.number.ilike(f"%{q}%") | Room.name.ilike(f"%{q}%"))
    page = page_number()
    size = 100
    rows = db.session.execute(stmt.limit(size + 1).offset((page - 1) * size)).scalars().all()
    return render_template("console/rooms.html", rooms=rows[:size], page=page, has_next=len(rows) > size, q=q)


@bp.route("/rooms/<int:room_id>", methods=["GET", "POST"])
@permission_required("property.view")
def room_detail(room_id: int):
    room = get_or_404(Room, room_id, "property.view")
    if request.method == "POST":
        return _edit_room(room)
    meters = db.session.execute(select(Meter).where(Meter.room_id == room.id).order_by(Meter.id)).scalars().all()
    return render_template("console/room.html", room=room, meters=meters, errors={}, form={})


@permission_required("property.manage")
def _edit_room(room: Room):
    form = request.form
    if form.get("action") == "delete":
        if db.session.execute(select(Meter.id).where(Meter.room_id == room.id)).first():
            flash(_("The room still has meters; move them first."), "error")
            return redirect(url_for("console.room_detail", room_id=room.id))
        building_id = room.building_id
        record("room.delete", room, {"number": room.number})
        db.session.delete(room)
        db.session.commit()
        flash(_("Room deleted."), "ok")
        return redirect(url_for("console.building_detail", building_id=building_id))
    before = {"name": room.name, "area_m2": str(room.area_m2), "kind": room.kind}
    try:
        room.name = (form.get("name") or "").strip()[:200]
        room.area_m2 = service.parse_area(form.get("area_m2"))
        room.kind = form.get("kind") if form.get("kind") in ("shop", "residence", "dorm", "office", "public") else room.kind
    except ValidationError as err:
        db.session.rollback()
        errors = refused(err, ("name", "area_m2", "kind"))  # the form again as typed, the problem beside its field
        meters = db.session.execute(select(Meter).where(Meter.room_id == room.id).order_by(Meter.id)).scalars().all()
        return render_template("console/room.html", room=room, meters=meters, errors=errors, form=form), 400
    record("room.update", room, {"before": before, "after": {"name": room.name, "area_m2": str(room.area_m2), "kind": room.kind}})
    db.session.commit()
    flash(_("Saved."), "ok")
    return redirect(url_for("console.room_detail", room_id=room.id))
