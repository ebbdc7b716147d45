"""Every console page renders for every role with the group's own objects: 200 (or 404 without the
permission, 302 to another page) — never a server error. Catches broken templates on real data."""

from __future__ import annotations

import pytest

from meterhub.tenants.permissions import ROLES
from tests.test_isolation import FOREIGN, ID_RULES, LIST_RULES, _url

SKIP_SUFFIXES = (".xlsx", ".csv", ".svg", ".pdf")


@pytest.mark.parametrize("role", sorted(ROLES))
def test_every_page_renders_for_every_role(role, app, client, operator, group):
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a bug must show as a 500 here, not as a test crash
    group.admin_operator_id = group.operator("group_admin")[2]
    operator(role, all_properties=True)
    failures = []
    for rule in LIST_RULES + [r for r in ID_RULES if "GET" in r.methods]:
        url = rule.rule if not rule.arguments else _url(rule, group, FOREIGN)
        if url is None or url.endswith(SKIP_SUFFIXES):
            continue
        response = client.get(url)
        if response.status_code >= 500 or response.status_code not in (200, 302, 404, 405):
            failures.append(f"GET {url} ({rule.endpoint}) -> {response.status_code}")
    assert not failures, "\n".join(failures)
