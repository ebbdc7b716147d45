"""Names, never ids (issue 21 item 2): the search endpoint behind every picker, and the forms that take what the
console shows (meter serials, room labels, account numbers, building names, floors as ``A/3``) — resolved in the
operator's scope, an unknown or out-of-scope key refused with a message naming it and nothing written, an Excel
list's unmatched entries listed on the confirmation page before anything runs."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal

from openpyxl import Workbook
from sqlalchemy import func, select

from meterhub.db import service_session
from meterhub.modules.apportion.models import ApportionMember, ApportionRule, ApportionSubMeter
from meterhub.modules.batch.models import Batch
from meterhub.modules.prepaid import accounts
from meterhub.tariffs import service as tariffs
from meterhub.tariffs.pricing import PlanVersion
from meterhub.tenants.lookup import label_of, labels_of
from tests.conftest import csrf_token
from tests.prepaid.conftest import add_meters


def _world(group):  # noqa: ANN001, ANN202
    """Three meters in room 101 of P1 (one bound to an account), one meter in P2, a plan; their keys."""
    with group.app.app_context(), service_session() as s:
        plan = tariffs.create_tariff(s, group.group_id, f"Plan {group.marker}")
        tariffs.add_version(s, plan, datetime(2020, 1, 1, tzinfo=UTC), PlanVersion("flat", tariffs.flat_prices(
            Decimal("1"))))
        for prop in (group.property_id, group.property2_id):
            tariffs.assign(s, group.group_id, "property", prop, plan)
        meters = add_meters(s, group.group_id, group.property_id, group.gateway_id, group.room_id, 3)
        far = add_meters(s, group.group_id, group.property2_id, group.gateway2_id, group.room2_id, 1)[0]
        account = accounts.create_account(s, group.group_id, group.property_id, [meters[2]], room_id=group.room_id,
                                          customer_name=f"Tenant {group.marker}", phone="13900000001", actor="t")
        far_account = accounts.create_account(s, group.group_id, group.property2_id, [far], customer_name="far",
                                              actor="t")
        keys = labels_of(s, group.group_id, "meter", [*meters, far])
        return {"meters": meters, "far": far, "account": account.id, "account_no": account.number,
                "far_account_no": far_account.number, "tariff_id": plan.id, "serials": keys,
                "room": label_of(s, group.group_id, "room", group.room_id),
                "room2": label_of(s, group.group_id, "room", group.room2_id),
                "building": label_of(s, group.group_id, "building", group.building_id),
                "floor": label_of(s, group.group_id, "floor", group.floor_id)}


def _rules(group) -> int:  # noqa: ANN001
    with group.app.app_context(), service_session() as s:
        return s.execute(select(func.count()).select_from(ApportionRule).where(
            ApportionRule.group_id == group.group_id)).scalar_one()


def test_search_finds_by_the_keys_people_use_in_scope_only(client, operator, group, other_group):
    w = _world(group)
    foreign = _world(other_group)
    operator("property_manager")  # P1 only
    serial = w["serials"][w["meters"][0]]
    found = client.get(f"/lookup?kind=meter&q={serial[:6]}").get_json()
    assert [f["key"] for f in found] == [serial] and w["room"] in found[0]["label"]
    assert client.get(f"/lookup?kind=meter&q={w['serials'][w['far']]}").get_json() == []  # P2: out of scope
    assert client.get(f"/lookup?kind=meter&q={foreign['serials'][foreign['meters'][0]]}").get_json() == []
    assert [f["key"] for f in client.get("/lookup?kind=room&q=101").get_json()] == [w["room"]]
    assert client.get("/lookup?kind=room&q=201").get_json() == []  # the room of P2
    tenant = client.get("/lookup?kind=tenant&q=13900000001").get_json()
    assert [t["key"] for t in tenant] == [w["account_no"]] and f"Tenant {group.marker}" in tenant[0]["label"]
    assert [b["key"] for b in client.get("/lookup?kind=floor&q=/1").get_json()] == [w["floor"]]
    assert client.get("/lookup?kind=operator&q=x").status_code == 404
    assert client.get(f"/lookup?kind=room&q=1&property_id={group.property2_id}").status_code == 404


def _rule_form(group, w, **changes) -> dict:  # noqa: ANN001
    form = {"property_id": group.property_id, "name": "公摊 A", "method": "ratio", "tariff_id": w["tariff_id"],
            "parent_meter": w["serials"][w["meters"][0]], "sub_meters": w["serials"][w["meters"][1]],
            "members": f"{w['account_no']}:2", "remainder_account": w["room"], "post_mode": "deduct", "subtract": "1"}
    return {**form, **changes}


def test_apportion_rule_built_from_serials_account_numbers_and_room_labels(client, operator, group):
    w = _world(group)
    operator("property_manager")
    token = csrf_token(client, "/apportion/")
    response = client.post("/apportion/rules/new", data={"csrf_token": token, **_rule_form(group, w)})
    assert response.status_code == 302, response.get_data(as_text=True)
    with group.app.app_context(), service_session() as s:
        rule = s.execute(select(ApportionRule).where(ApportionRule.group_id == group.group_id)).scalar_one()
        assert rule.parent_meter_id == w["meters"][0] and rule.remainder_account_id == w["account"]
        assert list(s.execute(select(ApportionSubMeter.meter_id).where(ApportionSubMeter.rule_id == rule.id))
                    .scalars()) == [w["meters"][1]]
        member = s.execute(select(ApportionMember).where(ApportionMember.rule_id == rule.id)).scalar_one()
        assert (member.account_id, member.ratio) == (w["account"], Decimal("2"))
    page = client.get("/apportion/").get_data(as_text=True)
    assert w["serials"][w["meters"][0]] in page  # the list names the parent meter by its serial, not its id


def test_apportion_rule_refuses_unknown_and_out_of_scope_keys_naming_them(client, operator, group, other_group):
    w = _world(group)
    foreign = _world(other_group)
    operator("property_manager")
    token = csrf_token(client, "/apportion/")
    for changes, named in (
        ({"parent_meter": "NO-SUCH-SERIAL"}, "NO-SUCH-SERIAL"),
        ({"sub_meters": w["serials"][w["far"]]}, w["serials"][w["far"]]),  # a meter of P2
        ({"parent_meter": foreign["serials"][foreign["meters"][0]]}, foreign["serials"][foreign["meters"][0]]),
        ({"members": f"{w['far_account_no']}:1"}, w["far_account_no"]),  # an account of P2
        ({"members": f"{foreign['account_no']}"}, foreign["account_no"]),  # another group's
        ({"remainder_account": "nobody"}, "nobody"),
        ({"parent_meter": str(w["meters"][0])}, str(w["meters"][0])),  # a database id is not a key
    ):
        response = client.post("/apportion/rules/new", data={"csrf_token": token, **_rule_form(group, w, **changes)})
        body = response.get_data(as_text=True)
        assert response.status_code == 400 and named in body, (changes, response.status_code)
        assert 'value="公摊 A"' in body  # the form keeps what was typed
    assert _rules(group) == 0


def test_batch_from_room_labels_lists_what_matched_nothing_before_it_runs(client, operator, group):
    w = _world(group)
    operator("property_manager")
    token = csrf_token(client, "/batch/")
    book = Workbook()
    book.active.append(("房间",))
    for key in (w["room"], w["serials"][w["meters"][0]], w["room2"], "Z-999"):
        book.active.append((key,))
    data = io.BytesIO()
    book.save(data)
    form = {"csrf_token": token, "property_id": group.property_id, "action": "read_now", "at": "2099-01-01T08:00",
            "building": w["building"], "floor": w["floor"]}
    preview = client.post("/batch/new", data={**form, "file": (io.BytesIO(data.getvalue()), "list.xlsx")},
                          content_type="multipart/form-data")
    page = preview.get_data(as_text=True)
    assert preview.status_code == 200 and "Z-999" in page and w["room2"] in page  # listed back, nothing ran
    with group.app.app_context(), service_session() as s:
        assert s.execute(select(func.count()).select_from(Batch).where(Batch.group_id == group.group_id)).scalar() == 0
    confirmed = client.post("/batch/new", data={**form, "confirmed": "yes",
                                                "keys": "\n".join((w["room"], w["room2"], "Z-999"))})
    assert confirmed.status_code == 302, confirmed.get_data(as_text=True)
    with group.app.app_context(), service_session() as s:
        batch = s.execute(select(Batch).where(Batch.group_id == group.group_id)).scalar_one()
        # the room's meters: the three of _world and the fixture's own device meter
        assert batch.total == 4 and sorted(batch.selection["unmatched"]) == sorted([w["room2"], "Z-999"])


def test_batch_refuses_an_unknown_or_out_of_scope_building(client, operator, group, other_group):
    _world(group)
    operator("property_manager")
    token = csrf_token(client, "/batch/")
    with group.app.app_context(), service_session() as s:
        p2_building = label_of(s, group.group_id, "room", group.room2_id).rsplit("-", 1)[0]
    for building in ("No such building", p2_building):
        response = client.post("/batch/new", data={"csrf_token": token, "property_id": group.property_id,
                                                   "action": "read_now", "building": building, "confirmed": "yes"})
        assert response.status_code == 400 and building in response.get_data(as_text=True), building
    with group.app.app_context(), service_session() as s:
        assert s.execute(select(func.count()).select_from(Batch).where(Batch.group_id == group.group_id)).scalar() == 0


def test_bill_billing_item_and_meter_swap_forms_take_keys_and_refuse_unknown_or_out_of_scope(client, operator,
                                                                                              group):
    from meterhub.modules.billing_items.models import BillingItem
    from meterhub.modules.postpaid.models import Bill

    w = _world(group)
    operator("property_manager")  # P1 only
    token = csrf_token(client, "/billing-items/")
    item = {"csrf_token": token, "property_id": group.property_id, "name": "物业费", "category": "property_fee",
            "rate": "10.00", "basis": "fixed", "recurrence": "monthly", "day": "1", "start_date": "2026-01-01",
            "mode": "deduct"}
    for key in ("NO-SUCH", w["far_account_no"]):  # unknown; of the other property
        page = client.post("/billing-items/new", data={**item, "accounts": key}, follow_redirects=True)
        assert key in page.get_data(as_text=True)
    with group.app.app_context(), service_session() as s:
        assert s.execute(select(func.count()).select_from(BillingItem)
                         .where(BillingItem.group_id == group.group_id)).scalar() == 0
    response = client.post("/billing-items/new", data={**item, "accounts": w["account_no"]})
    assert response.status_code == 302, response.get_data(as_text=True)
    bill = {"csrf_token": token, "start": "2026-01-01", "end": "2026-02-01", "make_postpaid": "1", "due_days": "10"}
    for account in ("NO-SUCH", w["far_account_no"]):
        page = client.post("/bills/generate", data={**bill, "account": account}, follow_redirects=True)
        assert account in page.get_data(as_text=True)
    with group.app.app_context(), service_session() as s:
        assert s.execute(select(func.count()).select_from(Bill).where(Bill.group_id == group.group_id)).scalar() == 0
    swap = {"csrf_token": token, "old_meter_id": w["meters"][2], "final_reading": "0", "new_initial_reading": "0",
            "confirmed": "yes"}
    for new in ("NO-SUCH", w["serials"][w["far"]]):  # unknown; a meter of the other property
        response = client.post(f"/prepaid/accounts/{w['account']}/swap", data={**swap, "new_meter": new})
        assert response.status_code == 400 and new in response.get_data(as_text=True), new
    response = client.post(f"/prepaid/accounts/{w['account']}/swap",
                           data={**swap, "new_meter": w["serials"][w["meters"][1]]})
    assert response.status_code == 302
    with group.app.app_context(), service_session() as s:
        from meterhub.modules.prepaid.models import MeterState

        bound = s.execute(select(MeterState.meter_id).where(MeterState.account_id == w["account"],
                                                            MeterState.active)).scalars().all()
        assert bound == [w["meters"][1]]
