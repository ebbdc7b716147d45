"""The isolation matrix: every route x every role x a foreign group (and a foreign property in scope).

Objects of another group answer 404 (never 403), lists never show another group's rows, and a scoped
operator cannot reach a property outside their scope by URL. A new route with an id parameter must get
an entry in ``FOREIGN`` below, or this test fails and says so.
"""

from __future__ import annotations

import re

import pytest

from meterhub.app import create_app
from meterhub.tenants.permissions import GROUP_WIDE_ROLES, ROLES
from tests.conftest import csrf_token

#: URL parameter -> attribute of a Tenant holding an object id of that kind (property P1 objects).
FOREIGN = {
    "property_id": "property_id",
    "building_id": "building_id",
    "room_id": "room_id",
    "operator_id": "admin_operator_id",
    "gateway_id": "gateway_id",
    "device_id": "device_id",
    "alarm_id": "alarm_id",
    "notifier_id": "notifier_id",
    "export_id": "export_id",
    "schedule_id": "schedule_id",
    # operations modules (tests/operations/factories.py; made on first use)
    "rule_id": "apportion_rule_id",
    "run_id": "apportion_run_id",
    "item_id": "billing_item_id",
    "batch_id": "batch_id",
    "bill_id": "bill_id",
    # prepaid module (Tenant.prepaid; made on first use)
    "account_id": "account_id",
    "meter_id": "meter_id",
    "transfer_id": "transfer_id",
    "channel_id": "payment_channel_id",
    # price plans (webui/tariffs.py; made on first use)
    "tariff_id": "tariff_id",
}
#: The same kinds, but in property P2 of the operator's own group (outside a P1-scoped operator).
OTHER_PROPERTY = {"property_id": "property2_id", "room_id": "room2_id", "gateway_id": "gateway2_id",
                  "alarm_id": "alarm2_id"}
PUBLIC = {"static", "auth.login", "auth.set_language", "devices.room_link"}
#: Blueprints with their own identity and isolation tests: the token API (tests/api/test_isolation_api.py),
#: the tenant portal (tests/portal) and the signed payment callbacks/sandbox pages (tests/payments).
OWN_IDENTITY = ("api.", "portal.", "payments.")


def _rules():
    app = create_app({"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "SECRET_KEY": "x", "TESTING": True})
    return [r for r in app.url_map.iter_rules() if r.endpoint not in PUBLIC and not r.endpoint.startswith(OWN_IDENTITY)]


RULES = _rules()
ID_RULES = [r for r in RULES if any(a in FOREIGN or "_id" in a for a in r.arguments)]
LIST_RULES = [r for r in RULES if not r.arguments and "GET" in r.methods]


def test_every_id_parameter_has_a_foreign_object():
    missing = {a for r in ID_RULES for a in r.arguments if a not in FOREIGN}
    assert not missing, f"add these URL parameters to FOREIGN in tests/test_isolation.py: {sorted(missing)}"


def _url(rule, tenant, mapping) -> str | None:
    values = {}
    for arg in rule.arguments:
        attr = mapping.get(arg)
        if attr is None:
            return None
        values[arg] = getattr(tenant, attr)
    path = rule.rule
    for arg, value in values.items():
        path = re.sub(rf"<(?:\w+:)?{arg}>", str(value), path)
    return path


@pytest.mark.parametrize("role", sorted(ROLES))
def test_foreign_group_objects_answer_404_for_every_route(role, client, operator, group, other_group):
    other_group.admin_operator_id = other_group.operator("group_admin")[2]
    operator(role)
    token = csrf_token(client, "/password")
    failures = []
    for rule in ID_RULES:
        url = _url(rule, other_group, FOREIGN)
        for method in sorted(rule.methods & {"GET", "POST"}):
            response = client.open(url, method=method, data={"csrf_token": token} if method == "POST" else None)
            if response.status_code != 404:
                failures.append(f"{method} {url} ({rule.endpoint}) -> {response.status_code}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("role", sorted(ROLES))
def test_lists_never_show_another_groups_rows(role, client, operator, group, other_group):
    operator(role, all_properties=True)
    leaks = []
    for rule in LIST_RULES:
        response = client.get(rule.rule)
        body = response.get_data(as_text=True) if response.mimetype.startswith("text/") else ""
        if response.mimetype.endswith("sheet"):
            body = response.get_data().decode("latin-1")
        if other_group.marker in body:
            leaks.append(f"GET {rule.rule} shows {other_group.marker}")
        assert response.status_code in (200, 302, 404), f"GET {rule.rule} -> {response.status_code}"
    assert not leaks, "\n".join(leaks)


@pytest.mark.parametrize("role", sorted(set(ROLES) - GROUP_WIDE_ROLES))
def test_scoped_operator_cannot_reach_another_property_of_the_group(role, client, operator, group):
    operator(role, properties=("P1",))
    token = csrf_token(client, "/password")
    failures = []
    for rule in ID_RULES:
        url = _url(rule, group, OTHER_PROPERTY)
        if url is None:
            continue
        for method in sorted(rule.methods & {"GET", "POST"}):
            response = client.open(url, method=method, data={"csrf_token": token} if method == "POST" else None)
            if response.status_code != 404:
                failures.append(f"{method} {url} ({rule.endpoint}) -> {response.status_code}")
        # The same kind of page for P1 works whenever the role has the permission (sanity check of the test).
    assert not failures, "\n".join(failures)
    rooms = client.get("/rooms").get_data(as_text=True)
    assert f"Dorm {group.marker}" not in rooms


def test_whole_group_admin_sees_both_properties(client, operator, group):
    operator("group_admin")
    assert client.get(f"/properties/{group.property2_id}").status_code == 200
    assert client.get(f"/rooms/{group.room2_id}").status_code == 200
