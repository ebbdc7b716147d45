"""Console pages for gateways, devices, onboarding (QR, Excel) and labels."""

from __future__ import annotations

from datetime import timedelta

from datetime import datetime, timezone

from flask import Blueprint, Response, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy import select

from meterhub.devices import excel, labels
from meterhub.devices.models import FRAMINGS, Device, Gateway, Meter
from meterhub.devices.onboarding import (
    DeviceSpec,
    config_from_qr,
    create_gateway,
    decode_qr_image,
    onboard_device,
)
from meterhub.errors import ValidationError
from meterhub.mqtt_auth.credentials import Credentials, issue_gateway_password
from meterhub.extensions import db
from meterhub.i18n import _l
from meterhub.plugins import driver_registry
from meterhub.process_events import recent as recent_process_events
from meterhub.timeseries import query
from meterhub.protocols.errors import QRCodeError
from meterhub.tenants.models import Building, Floor, Property, Room
from meterhub.tenants.scoping import get_or_404, objects_or_404, property_ids, requested, restrict, visible_properties

from .forms import refused
from .util import permission_required, record

bp = Blueprint("devices", __name__)
GATEWAY_FIELDS = ("property_id", "name", "host", "port", "framing", "baud", "parity", "mqtt_client_id")
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@bp.route("/gateways", methods=["GET", "POST"])
@permission_required("device.view")
def gateways():
    if request.method == "POST":
        return _create_gateway()
    return _gateways_page()


def _gateways_page() -> str:
    stmt = restrict(select(Gateway).order_by(Gateway.name), Gateway)
    if request.args.get("status") in ("online", "offline", "unknown"):  # a dashboard's "offline gateways"
        stmt = stmt.where(Gateway.status == request.args["status"])
    if request.args.get("property_id", "").isdecimal():
        stmt = stmt.where(Gateway.property_id == int(request.args["property_id"]))
    rows = db.session.execute(stmt).scalars().all()
    return render_template("devices/gateways.html", gateways=rows, framings=FRAMINGS, properties=visible_properties(),
                           process_events=recent_process_events(db.session, since=timedelta(days=1)))


@permission_required("device.manage")
def _create_gateway():
    form = request.form
    prop = requested(Property, "property_id", "device.manage")
    try:
        baud = (form.get("baud") or "9600").strip()
        if not baud.isdecimal():
            raise ValidationError(_l("Enter a whole number, e.g. 9600."), {"baud": "number"})
        bus = {"baud": int(baud), "parity": form.get("parity") or "N"}
        gateway = create_gateway(db.session, prop, form.get("name", ""), form.get("host", ""), form.get("port") or 502,
                                 form.get("framing", ""), bus, form.get("mqtt_client_id"))
    except ValidationError as err:
        db.session.rollback()
        refused(err, GATEWAY_FIELDS)  # the form again as typed, the problem beside its field
        return _gateways_page(), 400
    credentials = issue_gateway_password(gateway) if gateway.framing == "mqtt" else None
    record("gateway.create", gateway, {"name": gateway.name, "host": gateway.host, "port": gateway.port})
    db.session.commit()
    flash(_("Gateway created."), "ok")
    if credentials is not None:
        return _show_password(gateway, credentials, 201)
    return redirect(url_for("devices.gateway_detail", gateway_id=gateway.id))


def _show_password(gateway: Gateway, credentials: Credentials, status: int = 200) -> Response:
    """The gateway page with its new broker password: shown in this answer only, never in a redirect, a flash
    message (the session cookie) or a cache."""
    label = Markup(labels.qr_svg(labels.gateway_credentials_payload(credentials.username, credentials.password)))
    response = Response(render_template("devices/gateway.html", gateway=gateway, credentials=credentials,
                                        credentials_label=label), status)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/gateways/<int:gateway_id>/mqtt-password", methods=["POST"])
@permission_required("device.manage")
def reset_mqtt_password(gateway_id: int):
    """Issue a new broker password to an MQTT gateway (the old one stops working at once)."""
    gateway = get_or_404(Gateway, gateway_id, "device.manage")
    try:
        credentials = issue_gateway_password(gateway)
    except ValidationError as err:
        db.session.rollback()
        flash(str(err), "error")
        return redirect(url_for("devices.gateway_detail", gateway_id=gateway.id))
    record("gateway.mqtt_password", gateway, {"username": credentials.username})
    db.session.commit()
    return _show_password(gateway, credentials)


@bp.route("/gateways/<int:gateway_id>")
@permission_required("device.view")
def gateway_detail(gateway_id: int):
    gateway = get_or_404(Gateway, gateway_id, "device.view")
    return render_template("devices/gateway.html", gateway=gateway)


@bp.route("/devices/<int:device_id>")
@permission_required("device.view")
def device_detail(device_id: int):
    device = get_or_404(Device, device_id, "device.view")
    driver = driver_registry().get(device.driver_key)
    config = driver.mask_config(device.config) if driver else {}
    meters = db.session.execute(select(Meter).where(Meter.device_id == device.id).order_by(Meter.channel)).scalars().all()
    latest = query.latest(db.session, [m.id for m in meters])
    from meterhub.tenants.lookup import labels_of

    rooms = labels_of(db.session, device.group_id, "room", [m.room_id for m in meters if m.room_id])
    return render_template("devices/device.html", device=device, driver=driver, config=config, meters=meters,
                           latest=latest, rooms=rooms)


def _rooms_for(prop_id: int) -> list[Room]:
    return list(db.session.execute(
        select(Room).join(Floor).join(Building).where(Room.property_id == prop_id)
        .order_by(Building.name, Floor.level, Room.number)).scalars())


ONBOARD_FIELDS = ("gateway_id", "driver_key", "photo", "qr_payload", "address")


def _as_field(read, field: str):  # noqa: ANN001, ANN202
    """``read()``, a QR code that cannot be read refused beside ``field`` (the photo or the typed text)."""
    try:
        return read()
    except QRCodeError as err:
        raise ValidationError(str(err), {field: "unreadable"}) from err


@bp.route("/onboard", methods=["GET", "POST"])
@permission_required("device.manage")
def onboard():
    drivers = driver_registry()
    gateways_ = db.session.execute(restrict(select(Gateway).where(Gateway.framing != "mqtt").order_by(Gateway.name),
                                            Gateway)).scalars().all()
    form = request.form
    context = {"drivers": drivers, "gateways": gateways_, "form": form, "rooms": []}
    if request.method == "GET":
        return render_template("devices/onboard.html", **context)
    gateway = requested(Gateway, "gateway_id", "device.manage")
    # the room of each channel ("" for none) is resolved in scope and must be in the gateway's property
    room_ids = [int(v) if v.isdecimal() else None for v in form.getlist("room_ids")]
    rooms = objects_or_404(Room, [r for r in room_ids if r is not None], "device.manage")
    if any(room.property_id != gateway.property_id for room in rooms):
        abort(404)
    context["rooms"] = _rooms_for(gateway.property_id)
    driver = drivers.get(form.get("driver_key", ""))
    try:
        if driver is None:
            raise ValidationError(_l("Choose the device's driver."), {"driver_key": "required"})
        payload = form.get("qr_payload", "").strip()
        photo = request.files.get("photo")
        source = "qr_payload"
        if photo and photo.filename:
            source = "photo"
            payload = _as_field(lambda: decode_qr_image(photo.read()), source)
        if not payload:
            raise ValidationError(_l("Scan the QR code, upload a photo of it, or type its text."),
                                  {"qr_payload": "required"})
        info = _as_field(lambda: driver.parse_qr(payload), source)
        address = form.get("address", "").strip() or info.address
        if not address:
            raise ValidationError(_l("The QR code has no bus address; type the address set on the device."),
                                  {"address": "required"})
        config = config_from_qr(driver, info.model)
        spec = DeviceSpec(driver.key, address, info.serial, config, room_ids,
                          installed_at=datetime.now(timezone.utc))  # installed as it is scanned: no older readings
        device = onboard_device(db.session, gateway, spec, verify=True)
    except (ValidationError, QRCodeError) as err:
        db.session.rollback()
        refused(err, ONBOARD_FIELDS)  # beside the QR text, photo, address or driver; a device that did not answer
        return render_template("devices/onboard.html", **context), 422  # is said at the top
    record("device.onboard", device, {"serial": device.serial, "driver": device.driver_key,
                                      "gateway": gateway.name, "address": device.address})
    db.session.commit()
    flash(_("Device %(serial)s onboarded: it answered at address %(address)s.", serial=device.serial,
            address=device.address), "ok")
    return redirect(url_for("devices.device_detail", device_id=device.id))


@bp.route("/devices/import", methods=["GET", "POST"])
@permission_required("device.manage")
def import_devices():
    report = None
    if request.method == "POST":
        upload = request.files.get("file")
        if not upload or not upload.filename:  # beside the file field; the rows' problems are listed by row
            refused(ValidationError(_l("Choose an xlsx file."), {"file": "required"}), ("file", "verify"))
            return render_template("devices/import.html", report=None), 400
        report = excel.import_workbook(db.session, current_user.group_id, upload.read(),
                                       verify=request.form.get("verify") == "1",
                                       allowed_property_ids=property_ids(current_user))
        if report.ok:
            record("device.import", None, {"gateways": report.gateways, "devices": report.devices})
            db.session.commit()
            flash(_("Imported %(g)d gateways and %(d)d devices.", g=report.gateways, d=report.devices), "ok")
            if report.credentials:  # the MQTT gateways' passwords: shown in this answer only
                response = Response(render_template("devices/import.html", report=report))
                response.headers["Cache-Control"] = "no-store"
                return response
            return redirect(url_for("devices.gateways"))
        db.session.rollback()
    return render_template("devices/import.html", report=report), (422 if report else 200)


@bp.route("/devices/template.xlsx")
@permission_required("device.manage")
def import_template():
    return Response(excel.template(), mimetype=XLSX,
                    headers={"Content-Disposition": "attachment; filename=meterhub-devices-template.xlsx"})


@bp.route("/devices/export.xlsx")
@permission_required("device.view")
def export_devices():
    data = excel.export_workbook(db.session, current_user.group_id, property_ids(current_user))
    return Response(data, mimetype=XLSX, headers={"Content-Disposition": "attachment; filename=meterhub-devices.xlsx"})


@bp.route("/labels/devices/<int:device_id>.svg")
@permission_required("device.view")
def device_label(device_id: int):
    device = get_or_404(Device, device_id, "device.view")
    return Response(labels.qr_svg(labels.device_payload(device)), mimetype="image/svg+xml")


@bp.route("/labels/buildings/<int:building_id>")
@permission_required("property.view")
def room_labels(building_id: int):
    building = get_or_404(Building, building_id, "property.view")
    rooms = db.session.execute(select(Room).join(Floor).where(Room.building_id == building.id)
                               .order_by(Floor.level, Room.number)).scalars().all()
    secret = current_app.config["SECRET_KEY"]
    items = [(room, Markup(labels.qr_svg(url_for("devices.room_link", token=labels.room_token(
        secret, room.group_id, room.id), _external=True), scale=3))) for room in rooms]
    return render_template("devices/room_labels.html", building=building, items=items)


@bp.route("/r/<token>")
def room_link(token: str):
    """Target of a room's QR label: the room's pay page (portal), or its console page for staff."""
    target = labels.parse_room_token(current_app.config["SECRET_KEY"], token)
    if target is None:
        abort(404)
    endpoint = current_app.view_functions.get("portal.room_pay")
    if endpoint is not None:
        return redirect(url_for("portal.room_pay", token=token))
    return redirect(url_for("console.room_detail", room_id=target[1]))
