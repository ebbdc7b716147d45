"""Every state-changing console form (posted by a group admin) and portal form (by a tenant), with malformed
values in every field its module reads (discovered from the source, as the GET fuzzer does): refused with a
4xx or handled, never a server error."""

from __future__ import annotations

import inspect
import re

from tests.conftest import csrf_token
from tests.security.test_console_fuzz import _console_ids, _fill

VALUES = ("x", "-1", "99999999999999999999", "A" * 400, "²", "9999-12-31", "", "1e309", "NaN")
SKIP = ("api.", "portal.", "payments.", "auth.", "static")


def _form_fields(view) -> set[str]:
    """Form fields the view's module reads (regex over its source)."""
    source = inspect.getsource(inspect.getmodule(inspect.unwrap(view)))
    return set(re.findall(r"""(?:form|values)(?:\.get(?:list)?\(|\[)\s*["']([\w-]+)["']""", source))


def test_every_console_form_survives_malformed_values(app, client, group, login):
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a bug must show as a 500 response, not as a test crash
    group.admin_operator_id = group.operator("group_admin")[2]
    ids = _console_ids(group)
    username, password, _ = group.operator("group_admin", all_properties=True)
    assert login(username, password).status_code == 302
    token = csrf_token(client, "/password")
    failures, sent = [], 0
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if "POST" not in rule.methods or rule.endpoint.startswith(SKIP):
            continue
        url = _fill(rule, ids)
        fields = sorted(_form_fields(app.view_functions[rule.endpoint]))
        for value in VALUES:
            response = client.post(url, data={**{f: value for f in fields}, "csrf_token": token})
            sent += 1
            if response.status_code >= 500:
                failures.append(f"POST {url} {value[:20]!r} -> {response.status_code}")
    assert not failures, f"{len(failures)} server errors:\n" + "\n".join(failures[:60])
    assert sent < 800, f"{sent} requests: the fuzzer grew past its time budget"


def test_every_portal_form_survives_malformed_values(app, client, group):
    from meterhub.db import service_session
    from meterhub.portal.service import claim, set_password
    from tests.api.world import open_site

    app.config["PROPAGATE_EXCEPTIONS"] = False
    site = open_site(app, group)
    with app.app_context(), service_session() as s:
        set_password(s, claim(s, group.group_id, site.phone), "long enough 1")
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/portal/login").get_data(as_text=True))[1]
    signed_in = client.post("/portal/login", data={"phone": site.phone, "password": "long enough 1",
                                                   "csrf_token": token})
    assert signed_in.status_code == 302
    valid = {"number": site.account_number, "receipt_no": "R1", "bill_no": "B1", "out_trade_no": "O1", "token": "x"}
    failures = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if "POST" not in rule.methods or not rule.endpoint.startswith("portal.") or \
                rule.endpoint in ("portal.logout", "portal.password"):  # these would end the session
            continue
        url = _fill(rule, valid)
        for value in VALUES:
            fields = {f: value for f in _form_fields(app.view_functions[rule.endpoint])}
            response = client.post(url, data={**fields, "csrf_token": token})
            if response.status_code >= 500:
                failures.append(f"POST {url} {value[:20]!r} -> {response.status_code}")
    assert not failures, f"{len(failures)} server errors:\n" + "\n".join(failures[:60])
