"""Console pages for price plans (webui/tariffs.py): create, versions, assignment, scoping."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from meterhub.db import service_session
from meterhub.tariffs import service as tariffs
from meterhub.tariffs.models import Tariff, TariffAssignment, TariffVersion
from meterhub.tenants.audit import AuditEntry
from tests.conftest import csrf_token

EIGHT_PERIODS = """00:00-07:00 valley
07:00-08:00 flat
08:00-10:00 peak
10:00-12:00 尖
12:00-17:00 flat
17:00-19:00 peak
19:00-21:00 sharp
21:00-24:00 valley"""

TOU_PRICES = {"price_sharp": "1.2345", "price_peak": "0.950000", "price_flat": "0.62", "price_valley": "0.31"}


def _create_plan(client, name: str, utility: str = "electricity", property_id: int | str = "") -> int:
    token = csrf_token(client, "/tariffs/new")
    response = client.post("/tariffs/new", data={"csrf_token": token, "name": name, "utility": utility,
                                                 "property_id": str(property_id)})
    assert response.status_code == 302, response.get_data(as_text=True)
    location = response.headers["Location"]
    assert location.endswith("/versions/new")
    return int(location.rstrip("/").split("/")[-3])


def _add_version(client, tariff_id: int, **fields):
    path = f"/tariffs/{tariff_id}/versions/new"
    data = {"csrf_token": csrf_token(client, path), "kind": "tou", "effective_date": "2030-01-01",
            "effective_time": "00:00", "timezone": "Asia/Shanghai", "periods": EIGHT_PERIODS, "tiers": "",
            "tier_period": "month", **TOU_PRICES}
    data.update(fields)
    return client.post(path, data=data)


def _versions(app, tariff_id: int) -> list[TariffVersion]:
    with app.app_context(), service_session() as s:
        rows = s.execute(select(TariffVersion).where(TariffVersion.tariff_id == tariff_id)
                         .order_by(TariffVersion.effective_from)).scalars().all()
        return [(v.effective_from, tariffs.as_plan(v)) for v in rows]


def test_create_tou_plan_with_eight_periods_through_the_forms(app, client, operator, group):
    operator("property_manager")
    tariff_id = _create_plan(client, f"TOU {group.marker}", property_id=group.property_id)
    response = _add_version(client, tariff_id)
    assert response.status_code == 302, response.get_data(as_text=True)

    [(effective, plan)] = _versions(app, tariff_id)
    assert effective == datetime(2029, 12, 31, 16, 0, tzinfo=timezone.utc)  # midnight in Asia/Shanghai
    assert plan.kind == "tou"
    assert plan.periods == ((0, 420, "valley"), (420, 480, "flat"), (480, 600, "peak"), (600, 720, "sharp"),
                            (720, 1020, "flat"), (1020, 1140, "peak"), (1140, 1260, "sharp"), (1260, 1440, "valley"))
    assert plan.prices == {"sharp": Decimal("1.234500"), "peak": Decimal("0.950000"), "flat": Decimal("0.620000"),
                           "valley": Decimal("0.310000")}
    assert all(str(p).count(".") == 1 and len(str(p).split(".")[1]) == 6 for p in plan.prices.values())
    assert plan.tiers == ()

    page = client.get(f"/tariffs/{tariff_id}").get_data(as_text=True)
    assert "19:00" in page and "21:00" in page and "1.234500" in page
    listing = client.get("/tariffs/").get_data(as_text=True)
    assert f"TOU {group.marker}" in listing

    # Assign it to the operator's property; the list then says where it applies.
    token = csrf_token(client, f"/tariffs/{tariff_id}")
    response = client.post(f"/tariffs/{tariff_id}/assign", data={"csrf_token": token,
                                                                  "target": f"property:{group.property_id}"})
    assert response.status_code == 302
    with app.app_context(), service_session() as s:
        assigned = s.execute(select(TariffAssignment).where(TariffAssignment.scope == "property",
                                                            TariffAssignment.scope_id == group.property_id)).scalar_one()
        assert assigned.tariff_id == tariff_id and assigned.utility == "electricity"
        actions = set(s.execute(select(AuditEntry.action).where(AuditEntry.group_id == group.group_id)).scalars())
    assert {"tariff.created", "tariff.version_added", "tariff.assigned"} <= actions
    assert f"Mall {group.marker}" in client.get("/tariffs/").get_data(as_text=True)


def test_tiered_and_tiered_tou_versions(app, client, operator, group):
    operator("group_admin")
    tariff_id = _create_plan(client, f"Tiers {group.marker}")
    response = _add_version(client, tariff_id, kind="tiered", price_sharp="", price_peak="", price_valley="",
                            price_flat="0.5283", tiers="200 0.05\n400 0.3", tier_period="year")
    assert response.status_code == 302, response.get_data(as_text=True)
    response = _add_version(client, tariff_id, kind="tiered_tou", effective_date="2031-01-01",
                            tiers="180 0.05\n350 0.30")
    assert response.status_code == 302, response.get_data(as_text=True)
    (_, tiered), (_, both) = _versions(app, tariff_id)
    assert tiered.kind == "tiered" and tiered.tier_period == "year"
    assert tiered.prices == {r: Decimal("0.528300") for r in ("sharp", "peak", "flat", "valley")}
    assert tiered.tiers == ((Decimal("200"), Decimal("0.05")), (Decimal("400"), Decimal("0.3")))
    assert both.kind == "tiered_tou" and len(both.periods) == 8 and both.tiers[1] == (Decimal("350"), Decimal("0.3"))


@pytest.mark.parametrize("fields, message", [
    ({"periods": "00:00-07:00 valley\n08:00-24:00 flat"}, "Gap: nothing covers 07:00–08:00"),
    ({"periods": "00:00-12:00 valley\n12:00-20:00 flat"}, "Gap: nothing covers 20:00–24:00"),
    ({"periods": "00:00-09:00 valley\n08:00-24:00 flat"}, "Overlap"),
    ({"periods": "00:00-25:00 valley"}, "is not a time of day"),
    ({"periods": "00:00-7h valley\n07:00-24:00 flat"}, "is not a time HH:MM"),
    ({"periods": "00:00-12:00 valley\n12:00-24:00 cheap"}, "unknown rate"),
    ({"periods": "00:00-12:00\n12:00-24:00 flat"}, "should look like 08:00-11:00 peak"),
    ({"periods": "22:00-06:00 valley"}, "across midnight"),
    ({"periods": ""}, "at least one period"),
    ({"periods": "\n".join(f"{h:02d}:{m:02d}-{h + (m + 20) // 60:02d}:{(m + 20) % 60:02d} flat"
                           for h in range(24) for m in (0, 20, 40))}, "At most 48 periods"),
    ({"price_peak": "1e3"}, "must be a plain number"),
    ({"price_peak": "0.1234567"}, "more than 6 decimals"),
    ({"price_peak": ""}, "price is required"),
    ({"price_peak": "-1"}, "must be a plain number"),
    ({"effective_date": "2030-13-01"}, "effective date must be a date"),
    ({"timezone": "Mars/Olympus"}, "Unknown time zone"),
    ({"kind": "tiered", "tiers": "200 0.05\n100 0.1"}, "ascending"),
    ({"kind": "tiered", "tiers": "abc 0.05"}, "threshold must be a plain number"),
])
def test_bad_version_input_is_refused_with_a_clear_message_and_nothing_stored(app, client, operator, group,
                                                                               fields, message):
    operator("property_manager")
    tariff_id = _create_plan(client, f"Bad {group.marker}", property_id=group.property_id)
    response = _add_version(client, tariff_id, **fields)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert _versions(app, tariff_id) == []


def test_water_plan_is_flat_or_tiered(app, client, operator, group):
    operator("property_manager")
    tariff_id = _create_plan(client, f"Water {group.marker}", "water", group.property_id)
    response = _add_version(client, tariff_id)
    assert response.status_code == 400 and "water plan is flat or tiered" in response.get_data(as_text=True)
    assert _add_version(client, tariff_id, kind="flat", price_flat="3.45").status_code == 302
    assert _versions(app, tariff_id)[0][1].prices["flat"] == Decimal("3.45")


def test_effective_date_before_the_newest_version_is_refused(app, client, operator, group):
    operator("property_manager")
    tariff_id = _create_plan(client, f"Dated {group.marker}", property_id=group.property_id)
    assert _add_version(client, tariff_id, effective_date="2030-06-01").status_code == 302
    for day in ("2030-05-01", "2030-06-01"):
        response = _add_version(client, tariff_id, effective_date=day, price_peak="1.1")
        assert response.status_code == 400
        assert "must be after the newest version" in response.get_data(as_text=True)
    assert len(_versions(app, tariff_id)) == 1
    assert _add_version(client, tariff_id, effective_date="2030-07-01", price_peak="1.1").status_code == 302
    assert len(_versions(app, tariff_id)) == 2


def test_create_plan_validation(client, operator, group):
    operator("property_manager")
    _create_plan(client, f"Dup {group.marker}", property_id=group.property_id)
    token = csrf_token(client, "/tariffs/new")
    response = client.post("/tariffs/new", data={"csrf_token": token, "name": f"Dup {group.marker}",
                                                 "utility": "electricity", "property_id": group.property_id})
    assert response.status_code == 400 and "exists already" in response.get_data(as_text=True)
    response = client.post("/tariffs/new", data={"csrf_token": token, "name": "Gas", "utility": "gas",
                                                 "property_id": group.property_id})
    assert response.status_code == 400 and "electricity or water" in response.get_data(as_text=True)
    response = client.post("/tariffs/new", data={"name": "No token", "utility": "water"})
    assert response.status_code == 400


def test_scoped_manager_cannot_assign_to_a_room_of_another_property(app, client, operator, group):
    operator("property_manager", properties=("P1",))
    tariff_id = group.tariff_id
    page = client.get(f"/tariffs/{tariff_id}").get_data(as_text=True)
    assert f"room:{group.room_id}" in page and f"room:{group.room2_id}" not in page
    token = csrf_token(client, f"/tariffs/{tariff_id}")
    for target in (f"room:{group.room2_id}", f"property:{group.property2_id}", "room:999999999"):
        response = client.post(f"/tariffs/{tariff_id}/assign", data={"csrf_token": token, "target": target})
        assert response.status_code == 404, target
    response = client.post(f"/tariffs/{tariff_id}/assign", data={"csrf_token": token, "target": f"room:{group.room_id}"})
    assert response.status_code == 302
    with app.app_context(), service_session() as s:
        rows = s.execute(select(TariffAssignment.scope, TariffAssignment.scope_id)
                         .where(TariffAssignment.tariff_id == tariff_id)).all()
    assert rows == [("room", group.room_id)]


def test_cashier_cannot_see_the_pages(client, operator, group):
    operator("cashier")
    tariff_id = group.tariff_id
    for path in ("/tariffs/", "/tariffs/new", f"/tariffs/{tariff_id}", f"/tariffs/{tariff_id}/versions/new"):
        assert client.get(path).status_code == 404, path


def test_auditor_sees_but_cannot_edit(client, operator, group):
    operator("auditor")
    tariff_id = group.tariff_id
    assert client.get("/tariffs/").status_code == 200
    page = client.get(f"/tariffs/{tariff_id}").get_data(as_text=True)
    assert "0.600000" in page and "Add a version" not in page
    assert client.get(f"/tariffs/{tariff_id}/versions/new").status_code == 404


def test_another_groups_plan_answers_404(app, client, operator, group, other_group):
    operator("group_admin")
    foreign = other_group.tariff_id
    token = csrf_token(client, "/tariffs/new")
    assert client.get(f"/tariffs/{foreign}").status_code == 404
    assert client.get(f"/tariffs/{foreign}/versions/new").status_code == 404
    assert client.post(f"/tariffs/{foreign}/versions/new", data={"csrf_token": token}).status_code == 404
    response = client.post(f"/tariffs/{foreign}/assign", data={"csrf_token": token,
                                                               "target": f"property:{group.property_id}"})
    assert response.status_code == 404
    assert other_group.marker not in client.get("/tariffs/").get_data(as_text=True)
    with app.app_context(), service_session() as s:
        assert s.execute(select(func.count()).select_from(TariffVersion)
                         .where(TariffVersion.tariff_id == foreign)).scalar() == 1
        assert s.execute(select(func.count()).select_from(TariffAssignment)
                         .where(TariffAssignment.tariff_id == foreign)).scalar() == 0
        assert s.get(Tariff, foreign).group_id == other_group.group_id
