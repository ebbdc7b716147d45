"""API resources of the tenancy tree and metering: properties, rooms, meters, readings, usage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import jsonify
from sqlalchemy import select

from ..devices.models import Meter
from ..extensions import db
from ..tenants.models import Property, Room
from ..timeseries import query as ts_query
from . import serialize
from .auth import get_in_scope, requires, scoped
from .errors import ApiError
from .pagination import datetime_arg, enum_arg, int_arg, page
from .routes import Routes

routes = Routes()  # attached to the /api/v1 blueprint by meterhub.api.plugin

MAX_SPAN = timedelta(days=400)


@routes.route("/properties")
@requires("property.view")
def properties() -> Any:
    return jsonify(page(scoped(select(Property), Property), Property.id, serialize.property_))


@routes.route("/properties/<int:property_id>")
@requires("property.view")
def property_detail(property_id: int) -> Any:
    return jsonify(serialize.property_(get_in_scope(Property, property_id)))


@routes.route("/rooms")
@requires("property.view")
def rooms() -> Any:
    stmt = scoped(select(Room), Room)
    if (property_id := int_arg("property_id", None, 1, 2**62)) is not None:
        stmt = stmt.where(Room.property_id == property_id)
    if (building_id := int_arg("building_id", None, 1, 2**62)) is not None:
        stmt = stmt.where(Room.building_id == building_id)
    return jsonify(page(stmt, Room.id, serialize.room))


@routes.route("/rooms/<int:room_id>")
@requires("property.view")
def room_detail(room_id: int) -> Any:
    return jsonify(serialize.room(get_in_scope(Room, room_id)))


@routes.route("/meters")
@requires("device.view")
def meters() -> Any:
    stmt = scoped(select(Meter), Meter)
    if (room_id := int_arg("room_id", None, 1, 2**62)) is not None:
        stmt = stmt.where(Meter.room_id == room_id)
    if (property_id := int_arg("property_id", None, 1, 2**62)) is not None:
        stmt = stmt.where(Meter.property_id == property_id)
    return jsonify(page(stmt, Meter.id, serialize.meter))


@routes.route("/meters/<int:meter_id>")
@requires("device.view")
def meter_detail(meter_id: int) -> Any:
    meter = get_in_scope(Meter, meter_id)
    body = serialize.meter(meter)
    latest = ts_query.latest(db.session, [meter.id]).get(meter.id)
    body["latest"] = None if latest is None else {
        "ts": serialize.ts(latest.ts), "quality": latest.quality,
        "values": {k: serialize.number(v) for k, v in latest.values.items()}}
    return jsonify(body)


def _period(default_days: int) -> tuple[datetime, datetime]:
    end = datetime_arg("end") or datetime.now(UTC)
    start = datetime_arg("start") or end - timedelta(days=default_days)
    if start >= end or end - start > MAX_SPAN:
        raise ApiError(422, "Give start < end, at most 400 days apart.", {"start": "invalid period"})
    return start, end


@routes.route("/meters/<int:meter_id>/readings")
@requires("device.view")
def readings(meter_id: int) -> Any:
    meter = get_in_scope(Meter, meter_id)
    start, end = _period(1)
    limit = int_arg("limit", 1000, 1, 10_000) or 1000
    rows = ts_query.readings_between(db.session, meter.id, start, end, limit=limit)
    data = [{"ts": serialize.ts(r.pop("ts")), "quality": r.pop("quality"), "source": r.pop("source"),
             "values": {k: serialize.number(v) for k, v in r.items()}} for r in rows]
    return jsonify({"meter_id": meter.id, "data": data})


@routes.route("/meters/<int:meter_id>/usage")
@requires("device.view")
def usage(meter_id: int) -> Any:
    meter = get_in_scope(Meter, meter_id)
    bucket = enum_arg("bucket", tuple(ts_query.BUCKETS)) or "day"
    start, end = _period(31)
    rows = ts_query.usage(db.session, [meter.id], start, end, bucket)
    data = [{"bucket": serialize.ts(r.bucket), "energy_kwh": serialize.number(r.energy_kwh),
             "water_m3": serialize.number(r.water_m3), "readings": r.readings} for r in rows]
    return jsonify({"meter_id": meter.id, "bucket": bucket, "data": data})
