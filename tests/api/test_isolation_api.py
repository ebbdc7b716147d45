"""The API's isolation matrix, generated over every API route with an id: another group's objects answer
404 (never 403 or 200) for a group-admin token with every scope, for every method."""

from __future__ import annotations

import re

from .world import bearer, make_token, open_site


def test_every_api_id_route_answers_404_for_another_groups_objects(app, client, group, other_group):
    from meterhub.commands.service import create_command
    from meterhub.db import service_session
    from meterhub.devices.models import Meter

    open_site(app, group)
    foreign = open_site(app, other_group)
    with app.app_context(), service_session() as s:
        command_id = create_command(s, s.get(Meter, foreign.meter_id), "read_now", {}).id
    ids = {"property_id": other_group.property_id, "room_id": other_group.room_id, "meter_id": foreign.meter_id,
           "account_id": foreign.account_id, "command_id": command_id}
    token = make_token(app, group, "group_admin", ("read", "topup", "commands"), ("P1", "P2"))
    rules = [r for r in app.url_map.iter_rules() if r.endpoint.startswith("api.") and r.arguments
             and r.endpoint != "api.unknown"]
    id_rules = [r for r in rules if any(a.endswith("_id") for a in r.arguments)]
    assert {a for r in id_rules for a in r.arguments} <= set(ids), "add the new id kind to this test"
    failures = []
    for rule in id_rules:
        path = rule.rule
        for arg in rule.arguments:
            path = re.sub(rf"<(?:\w+:)?{arg}>", str(ids[arg]), path)
        for method in sorted(rule.methods & {"GET", "POST"}):
            response = client.open(path, method=method, json={"amount": "1.00", "kind": "read_now"},
                                   headers={**bearer(token), "Idempotency-Key": "iso"})
            if response.status_code != 404:
                failures.append(f"{method} {path} -> {response.status_code}")
    assert not failures, "\n".join(failures)
