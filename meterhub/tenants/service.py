"""Operations on the tenancy tree and operators; views and the CLI call these, never raw models."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import ValidationError
from ..i18n import _l
from ..models import utcnow
from .auth import hash_password
from .models import Building, Floor, Group, Operator, OperatorProperty, Property, Room
from .permissions import ROLES

CODE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
USERNAME_RE = re.compile(r"^[a-z0-9_.@-]{3,64}$")


def _required(value: str | None, field_name: str, label: object, max_len: int = 200) -> str:
    value = (value or "").strip()
    if not value:
        raise ValidationError(_l("%(label)s is required.", label=label), {field_name: "required"})
    if len(value) > max_len:
        raise ValidationError(_l("%(label)s is longer than %(max)d characters.", label=label, max=max_len),
                              {field_name: "too long"})
    return value


def parse_area(value: str | Decimal | None) -> Decimal:
    """A room area in m² with two decimals; blank is 0."""
    if value in (None, ""):
        return Decimal("0")
    try:
        area = Decimal(str(value).strip()).quantize(Decimal("0.01"))
    except (InvalidOperation, ValueError) as err:
        raise ValidationError(_l("Area “%(value)s” is not a number of m²; enter e.g. 35.5.", value=value),
                              {"area_m2": "not a number"}) from err
    if not area.is_finite():  # NaN and Infinity parse, then refuse every comparison
        raise ValidationError(_l("Area “%(value)s” is not a number of m²; enter e.g. 35.5.", value=value),
                              {"area_m2": "not a number"})
    if area < 0 or area > Decimal("99999999"):
        raise ValidationError(_l("Area %(area)s m² is out of range: enter 0 to 99999999.", area=area),
                              {"area_m2": "out of range"})
    return area


def create_group(session: Session, name: str, code: str, timezone: str = "Asia/Shanghai") -> Group:
    code = _required(code, "code", _l("Group code"), 64)
    if not CODE_RE.match(code):
        raise ValidationError(_l("Group code may use letters, digits, '_', '-' and '.' only."), {"code": "invalid"})
    group = Group(name=_required(name, "name", _l("Group name")), code=code, timezone=timezone, modules={})
    session.add(group)
    session.flush()
    return group


def create_property(session: Session, group_id: int, name: str, code: str, address: str = "",
                    timezone: str = "Asia/Shanghai", reading_interval_min: int = 30) -> Property:
    code = _required(code, "code", _l("Property code"), 64)
    if not CODE_RE.match(code):
        raise ValidationError(_l("Property code may use letters, digits, '_', '-' and '.' only."), {"code": "invalid"})
    if session.execute(select(Property.id).where(Property.group_id == group_id, Property.code == code)).first():
        raise ValidationError(_l("A property with code %(code)s exists already.", code=code), {"code": "taken"})
    if not 1 <= int(reading_interval_min) <= 1440:
        raise ValidationError(_l("Reading interval must be 1 to 1440 minutes."), {"reading_interval_min": "range"})
    prop = Property(group_id=group_id, name=_required(name, "name", _l("Property name")), code=code,
                    address=(address or "").strip(), timezone=timezone,
                    reading_interval_min=int(reading_interval_min))
    session.add(prop)
    session.flush()
    return prop


def create_building(session: Session, prop: Property, name: str) -> Building:
    name = _required(name, "name", _l("Building name"), 100)
    if session.execute(select(Building.id).where(Building.property_id == prop.id, Building.name == name)).first():
        raise ValidationError(_l("Building %(name)s exists already in this property.", name=name), {"name": "taken"})
    building = Building(group_id=prop.group_id, property_id=prop.id, name=name)
    session.add(building)
    session.flush()
    return building


def ensure_floor(session: Session, building: Building, level: int, name: str | None = None) -> Floor:
    floor = session.execute(
        select(Floor).where(Floor.building_id == building.id, Floor.level == level)
    ).scalar()
    if floor is None:
        floor = Floor(group_id=building.group_id, property_id=building.property_id,
                      building_id=building.id, level=level, name=name or f"{level}F")
        session.add(floor)
        session.flush()
    return floor


def create_room(session: Session, floor: Floor, number: str, name: str = "", area_m2: str | Decimal = "0",
                kind: str = "shop") -> Room:
    number = _required(number, "number", _l("Room number"), 32)
    if session.execute(select(Room.id).where(Room.floor_id == floor.id, Room.number == number)).first():
        raise ValidationError(_l("Room %(number)s exists already on floor %(floor)s.", number=number, floor=floor.name),
                              {"number": "taken"})
    room = Room(group_id=floor.group_id, property_id=floor.property_id, building_id=floor.building_id,
                floor_id=floor.id, number=number, name=(name or "").strip(), area_m2=parse_area(area_m2),
                kind=kind)
    session.add(room)
    session.flush()
    return room


@dataclass
class BulkResult:
    created: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


MAX_BULK_ROOMS = 5000


def _whole(value: object, field_name: str) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError) as err:
        raise ValidationError(_l("Enter a whole number, e.g. 3."), {field_name: "not a number"}) from err


def bulk_create_rooms(session: Session, building: Building, floor_from: int, floor_to: int,
                      room_from: str, room_to: str, area_m2: str | Decimal = "0", kind: str = "shop") -> BulkResult:
    """Create rooms ``{floor}{room}`` for every floor and room number in the ranges ("1–6", "01–20").

    The room part keeps the width of ``room_from`` (``01`` gives 101, 102 ... 620); existing rooms are
    skipped and reported, so running it twice is harmless.
    """
    floor_from, floor_to = _whole(floor_from, "floor_from"), _whole(floor_to, "floor_to")
    first_room, last_room = _whole(room_from, "room_from"), _whole(room_to, "room_to")
    if floor_from > floor_to:
        raise ValidationError(_l("Each range must go from a lower to a higher number."), {"floor_to": "reversed"})
    if first_room > last_room or first_room < 0:
        raise ValidationError(_l("Each range must go from a lower to a higher number."), {"room_to": "reversed"})
    count = (floor_to - floor_from + 1) * (last_room - first_room + 1)
    if count > MAX_BULK_ROOMS:
        raise ValidationError(_l("%(count)d rooms at once is too many; create at most %(max)d.", count=count,
                                 max=MAX_BULK_ROOMS), {"floor_to": "too many"})
    area = parse_area(area_m2)
    width = len(str(room_from).strip())
    result = BulkResult()
    for level in range(floor_from, floor_to + 1):
        floor = ensure_floor(session, building, level)
        existing = set(session.execute(select(Room.number).where(Room.floor_id == floor.id)).scalars())
        for n in range(first_room, last_room + 1):
            number = f"{level}{n:0{width}d}"
            if number in existing:
                result.skipped.append(number)
                continue
            session.add(Room(group_id=building.group_id, property_id=building.property_id,
                             building_id=building.id, floor_id=floor.id, number=number, area_m2=area,
                             kind=kind))
            result.created.append(number)
    session.flush()
    return result


def create_operator(session: Session, group_id: int, username: str, password: str, role: str,
                    name: str = "", all_properties: bool = False, property_ids: list[int] | None = None) -> Operator:
    username = _required(username, "username", _l("Username"), 64).lower()
    if not USERNAME_RE.match(username):
        raise ValidationError(_l("Username: 3–64 of a–z, 0–9, '_', '.', '@', '-'."), {"username": "invalid"})
    if role not in ROLES:
        raise ValidationError(_l("Unknown role %(role)s. Choose one of: %(roles)s.", role=role, roles=", ".join(ROLES)),
                              {"role": "unknown"})
    from .auth import lookup

    if lookup(session, username) is not None:
        raise ValidationError(_l("Username %(username)s is taken.", username=username), {"username": "taken"})
    operator = Operator(group_id=group_id, username=username, name=(name or "").strip(),
                        password_hash=hash_password(password), role=role, all_properties=all_properties,
                        password_changed_at=utcnow())
    session.add(operator)
    session.flush()
    set_scopes(session, operator, property_ids or [])
    return operator


def set_scopes(session: Session, operator: Operator, property_ids: list[int]) -> None:
    """Replace the operator's property scope (properties must belong to the operator's group)."""
    wanted = set(property_ids)
    valid = set(session.execute(
        select(Property.id).where(Property.group_id == operator.group_id, Property.id.in_(wanted or {-1}))
    ).scalars())
    if wanted - valid:
        raise ValidationError(_l("Unknown property in the scope."), {"property_ids": "unknown"})
    operator.scopes = [OperatorProperty(group_id=operator.group_id, operator_id=operator.id, property_id=p)
                       for p in sorted(valid)]
    session.flush()
