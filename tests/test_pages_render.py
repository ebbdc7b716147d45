"""Every console page renders for every role with the group's own objects: 200 (or 404 without the
permission, 302 to another page) — never a server error. Catches broken templates on real data. And no page, in
the console or the tenant portal, prints a raw time: microseconds or UTC offsets (the `when` filter shows local
time to the minute)."""

from __future__ import annotations

import re
import uuid

import pytest

from meterhub.tenants.permissions import ROLES
from tests.portal.conftest import codes  # noqa: F401  (the portal's sign-in code fixture)
from tests.test_isolation import FOREIGN, ID_RULES, LIST_RULES, _url

SKIP_SUFFIXES = (".xlsx", ".csv", ".svg", ".pdf", ".json")
RAW_TIME = re.compile(r"\d{2}:\d{2}:\d{2}\.\d{3,}|\d{2}:\d{2}(?::\d{2})?\+00:?00")


def raw_times(html: str) -> list[str]:
    """The raw timestamps in a page (microseconds, a UTC offset), with a little context."""
    return [html[max(0, m.start() - 40):m.end() + 10] for m in RAW_TIME.finditer(html)]


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
        elif response.status_code == 200 and response.mimetype == "text/html":
            failures += [f"GET {url}: raw time {found!r}" for found in raw_times(response.get_data(as_text=True))]
    assert not failures, "\n".join(failures)


def test_the_raw_time_check_finds_what_it_is_for():
    assert raw_times("at 2026-12-03 21:21:33.061852+00:00 –")
    assert raw_times("2026-12-03 21:21+00:00") and raw_times("13:21:33.0618")
    assert not raw_times("2026-12-03 21:21 · ¥1,234.50 · 12:30:05")


def test_portal_pages_show_local_times(app, client, group, codes):
    from meterhub.db import service_session
    from meterhub.modules.prepaid import cashier
    from tests.api.world import open_site
    from tests.portal.conftest import sign_in_with_code

    site = open_site(app, group)
    with app.app_context(), service_session() as s:
        receipt = cashier.topup(s, group.group_id, site.account_id, "40.00", "cash", uuid.uuid4().hex, actor="t")
    assert sign_in_with_code(client, codes, site.phone).status_code == 302
    failures = []
    for url in ("/portal/", f"/portal/a/{site.account_number}", f"/portal/a/{site.account_number}/members",
                f"/portal/a/{site.account_number}/receipts/{receipt.receipt_no}", "/portal/password"):
        response = client.get(url, follow_redirects=True)
        assert response.status_code == 200, url
        failures += [f"GET {url}: raw time {found!r}" for found in raw_times(response.get_data(as_text=True))]
    assert not failures, "\n".join(failures)
