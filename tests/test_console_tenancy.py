"""Managing the tenancy tree in the console, with every change in the audit log."""

from __future__ import annotations

from sqlalchemy import func, select

from meterhub.db import service_session
from meterhub.tenants.audit import AuditEntry
from meterhub.tenants.models import Building, Floor, Property, Room
from tests.conftest import csrf_token


def _count(app, model, **where) -> int:
    with app.app_context(), service_session() as s:
        stmt = select(func.count()).select_from(model)
        for key, value in where.items():
            stmt = stmt.where(getattr(model, key) == value)
        return s.execute(stmt).scalar()


def test_bulk_room_creation_floors_1_to_6_rooms_01_to_20(app, client, operator, group):
    operator("property_manager")
    token = csrf_token(client, f"/buildings/{group.building_id}")
    form = {"csrf_token": token, "action": "bulk_rooms", "floor_from": "1", "floor_to": "6",
            "room_from": "01", "room_to": "20", "area_m2": "12.50", "kind": "dorm"}
    response = client.post(f"/buildings/{group.building_id}", data=form, follow_redirects=True)
    page = response.get_data(as_text=True)
    assert "119 rooms created, 1 existed already" in page  # 101 existed from the fixture
    assert _count(app, Room, building_id=group.building_id) == 120
    assert _count(app, Floor, building_id=group.building_id) == 6
    with app.app_context(), service_session() as s:
        numbers = set(s.execute(select(Room.number).where(Room.building_id == group.building_id)).scalars())
        area = s.execute(select(Room.area_m2).where(Room.building_id == group.building_id,
                                                   Room.number == "620")).scalar()
    assert {"101", "120", "601", "620"} <= numbers and "121" not in numbers
    assert str(area) == "12.50"
    again = client.post(f"/buildings/{group.building_id}", data=form, follow_redirects=True)
    assert "0 rooms created, 120 existed already" in again.get_data(as_text=True)


def test_bulk_creation_rejects_bad_ranges(app, client, operator, group):
    operator("property_manager")
    token = csrf_token(client, f"/buildings/{group.building_id}")
    for floor_to, room_to, message in (("0", "20", "lower to a higher"), ("6", "x", "Enter a whole number"),
                                       ("99", "999", "too many")):
        response = client.post(f"/buildings/{group.building_id}", follow_redirects=True, data={
            "csrf_token": token, "action": "bulk_rooms", "floor_from": "1", "floor_to": floor_to,
            "room_from": "01", "room_to": room_to})
        assert message in response.get_data(as_text=True)
    assert _count(app, Room, building_id=group.building_id) == 1


def test_cashier_cannot_change_rooms_and_sees_no_form(client, operator, group):
    operator("cashier")
    page = client.get(f"/buildings/{group.building_id}").get_data(as_text=True)
    assert "bulk_rooms" not in page
    token = csrf_token(client, f"/buildings/{group.building_id}")
    response = client.post(f"/buildings/{group.building_id}", data={
        "csrf_token": token, "action": "add_room", "level": "1", "number": "999"})
    assert response.status_code == 404


def test_group_admin_creates_property_and_building_audited(app, client, operator, group):
    username = operator("group_admin")
    token = csrf_token(client, "/properties")
    response = client.post("/properties", data={"csrf_token": token, "name": "New Plaza", "code": "NP",
                                                "reading_interval_min": "15"})
    assert response.status_code == 302
    with app.app_context(), service_session() as s:
        prop = s.execute(select(Property).where(Property.group_id == group.group_id, Property.code == "NP")).scalar()
    assert prop.reading_interval_min == 15
    client.post(f"/properties/{prop.id}", data={"csrf_token": token, "action": "add_building", "name": "T1"})
    assert _count(app, Building, property_id=prop.id) == 1
    duplicate = client.post("/properties", data={"csrf_token": token, "name": "Again", "code": "NP"},
                            follow_redirects=True)
    assert "exists already" in duplicate.get_data(as_text=True)
    with app.app_context(), service_session() as s:
        actions = list(s.execute(select(AuditEntry.action).where(AuditEntry.actor == username)
                                 .order_by(AuditEntry.id)).scalars())
    assert actions == ["login", "property.create", "building.create"]


def test_admin_manages_operator_scope(app, client, operator, group):
    operator("group_admin")
    username, password, op_id = group.operator("cashier", ("P1",))
    token = csrf_token(client, "/operators/")
    response = client.post(f"/operators/{op_id}", data={"csrf_token": token, "role": "property_manager",
                                                        "property_ids": [str(group.property2_id)]})
    assert response.status_code == 302
    client.post("/logout", data={"csrf_token": token})
    from tests.conftest import csrf_token as token_for

    client.post("/login", data={"username": username, "password": password, "csrf_token": token_for(client)})
    assert client.get(f"/properties/{group.property2_id}").status_code == 200
    assert client.get(f"/properties/{group.property_id}").status_code == 404

