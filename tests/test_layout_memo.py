"""The console layout's menu and property switcher are kept a short while per operator (webui.layout_memo, issue 19
item 6): a property renamed, added or taken out of an operator's scope shows on the next page, and one operator's
kept list is never another's."""

from __future__ import annotations

import re

from meterhub.db import service_session
from meterhub.tenants.models import OperatorProperty, Property
from tests.conftest import csrf_token


def _switcher(client) -> list[str]:
    page = client.get("/prepaid/counter").get_data(as_text=True)
    form = re.search(r'<form class="switcher.*?</form>', page, re.S)
    assert form, "no property switcher"
    return re.findall(r'<option value="\d+"[^>]*>([^<]+)</option>', form.group(0))


def _signed_in(app, group, role: str, all_properties: bool):
    client = app.test_client()
    username, password, operator_id = group.operator(role, ("P1",), all_properties)
    answer = client.post("/login", data={"username": username, "password": password,
                                         "csrf_token": csrf_token(client)})
    assert answer.status_code == 302
    return client, operator_id


def test_switcher_follows_property_writes_and_scope(app, group):
    admin, _ = _signed_in(app, group, "group_admin", True)
    manager, manager_id = _signed_in(app, group, "property_manager", False)
    mall, dorm = f"Mall {group.marker}", f"Dorm {group.marker}"
    assert sorted(_switcher(admin)) == sorted([mall, dorm])
    assert _switcher(manager) == [mall]  # the admin's kept list is not the manager's

    with app.app_context(), service_session() as s:
        s.get(Property, group.property_id).name = f"Plaza {group.marker}"
    assert sorted(_switcher(admin)) == sorted([f"Plaza {group.marker}", dorm])
    assert _switcher(manager) == [f"Plaza {group.marker}"]

    with app.app_context(), service_session() as s:  # the manager's scope grows: the next page lists both
        s.add(OperatorProperty(group_id=group.group_id, operator_id=manager_id, property_id=group.property2_id))
    assert sorted(_switcher(manager)) == sorted([f"Plaza {group.marker}", dorm])
