"""A route fuzzer for the console and the portal (what schemathesis is for the API): every GET route of
``app.url_map``, signed in as each role on a seeded group, gets malformed values in every query parameter
it reads and in its URL converters. Bad input may be refused (400, 404, 422...), never a server error.

The query parameters a view reads are discovered from the source of its module (``request.args.get("x")``,
``args["x"]``...) and the report filter parser, on top of a standard set; nobody has to list them here.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from meterhub.db import service_session
from meterhub.tenants.permissions import ROLES
from tests.conftest import csrf_token
from tests.test_isolation import FOREIGN

ROOT = Path(__file__).resolve().parents[2]
STANDARD = ("page", "q", "id", "property_id", "building_id", "floor_id", "room_id", "meter_id", "account_id",
            "status", "state", "kind", "from", "to", "start", "end", "date", "month", "year", "format", "bucket",
            "next", "verify", "limit", "after", "level", "granularity", "utility", "action", "actor")
#: Malformed query values: not numbers, numbers too large or negative, NUL, very long, non-ASCII digits and
#: letters, impossible and extreme dates, injection-looking text.
VALUES = ("x", "-1", "99999999999999999999", "-99999999999999999999", "\x00", "A" * 4000, "²", "😀\u202e",
          "9999-12-31", "0001-01-01", "2024-02-30", "' OR 1=1 --")
SHARP = ("x", "99999999999999999999", "-1", "²", "9999-12-31", "0001-01-01")
RAW_QUERIES = (b"page=%ff%fe", b"q=%c0%af&page=%00", b"=&&=x&%zz=1", b"property_id[]=1&page[]=2")
INT_VALUES = ("99999999999999999999", "0", "2147483648", "9223372036854775808")
TEXT_VALUES = ("%00", "x" * 3000, "%F0%9F%98%80", "..%2F..", "%ff", "0")
SKIP = {"static", "api.unknown"}
MAX_REQUESTS = 2200  # per test: keeps the fuzzer near 30 s of CPU; raise it consciously when routes grow


def _params_read_by(view) -> set[str]:
    """Query parameters the view's module reads (regex over its source)."""
    module = inspect.getmodule(inspect.unwrap(view))
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return set()
    return set(re.findall(r"""(?:args|values)(?:\.get(?:list)?\(|\[)\s*["']([\w-]+)["']""", source))


REPORT_PARAMS = set(re.findall(r"""args\.get\(["'](\w+)["']""",
                               (ROOT / "meterhub" / "reports" / "filters.py").read_text()))


def _get_rules(app, prefixes: tuple[str, ...]) -> list:
    return sorted((r for r in app.url_map.iter_rules()
                   if "GET" in r.methods and r.endpoint not in SKIP and r.endpoint.startswith(prefixes)),
                  key=lambda r: r.rule)


def _fill(rule, values: dict[str, str]) -> str:
    path = rule.rule
    for arg, value in values.items():
        path = re.sub(rf"<(?:\w+:)?{arg}>", str(value), path)
    return path


def _queries(app, rule, values: tuple[str, ...], per_param: bool) -> Iterator[dict[str, str] | bytes]:
    """Query strings to send: every parameter at once with each value (``page`` valid, so that its refusal
    hides no other parameter), then (``per_param``) each parameter the view reads alone."""
    own = _params_read_by(app.view_functions[rule.endpoint])
    if rule.endpoint.startswith(("reports.", "api.report")):
        own |= REPORT_PARAMS
    params = sorted(set(STANDARD) | own)
    for value in values:
        yield {p: "1" if p == "page" else value for p in params}
    if per_param:
        for param in sorted(own):
            for value in SHARP:
                yield {param: value}
        if own:
            yield from RAW_QUERIES


def _probe(client, url: str, query, failures: list[str], headers: dict | None = None) -> None:
    failures.append("")  # one "" per request sent: counted, then dropped
    if isinstance(query, bytes):  # raw, possibly invalid, percent-encoding
        response = client.get(f"{url}?{query.decode('ascii')}", headers=headers)
    else:
        response = client.get(url, query_string=query, headers=headers)
    if response.status_code >= 500:
        shown = query if isinstance(query, bytes) else {k: v[:30] for k, v in list(query.items())[:3]}
        failures.append(f"GET {url} {shown!r} -> {response.status_code}")
    response.close()


def _converter_urls(rule, valid: dict[str, str]) -> Iterator[str]:
    """The rule's URL with each converter given malformed values (the others valid)."""
    for arg, converter in rule._converters.items():
        kind = type(converter).__name__
        for bad in INT_VALUES if kind == "IntegerConverter" else TEXT_VALUES:
            yield _fill(rule, {**valid, arg: bad})


def _console_ids(group) -> dict[str, str]:
    ids = {}
    for arg, attr in FOREIGN.items():
        ids[arg] = str(getattr(group, attr))
    ids.update({"key": "usage", "token": "x", "export_id": str(group.export_id)})
    return ids


@pytest.fixture()
def fuzz_app(app):
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a bug must show as a 500 response, not as a test crash
    return app


def test_every_console_get_route_survives_malformed_input_for_every_role(fuzz_app, client, group, login):
    group.admin_operator_id = group.operator("group_admin")[2]
    ids = _console_ids(group)
    rules = [r for r in _get_rules(fuzz_app, ("",)) if not r.endpoint.startswith(("api.", "portal."))]
    failures: list[str] = []
    for n, role in enumerate(sorted(ROLES)):
        username, password, _ = group.operator(role, all_properties=True)
        assert login(username, password).status_code == 302
        full = role == "group_admin"  # the other roles: one value each, a different one per role
        for rule in rules:
            url = _fill(rule, ids) if rule.arguments else rule.rule
            values = VALUES if full else (VALUES[n % len(VALUES)],)
            for query in _queries(fuzz_app, rule, values, per_param=full):
                _probe(client, url, query, failures)
            if full:
                for bad_url in _converter_urls(rule, ids):
                    _probe(client, bad_url, {}, failures)
        client.post("/logout", data={"csrf_token": csrf_token(client, "/password")})
    _check(failures)


def _check(failures: list[str]) -> None:
    sent = failures.count("")
    failures[:] = [f for f in failures if f]
    assert not failures, f"{len(failures)} server errors:\n" + "\n".join(failures[:60])
    assert sent <= MAX_REQUESTS, f"{sent} requests: the fuzzer grew past its time budget"


def test_every_portal_and_api_get_route_survives_malformed_input(fuzz_app, client, group):
    from meterhub.portal.service import claim, set_password
    from tests.api.world import make_token, open_site

    site = open_site(fuzz_app, group)
    with fuzz_app.app_context(), service_session() as s:
        set_password(s, claim(s, group.group_id, site.phone), "long enough 1")
    page = client.get("/portal/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    signed_in = client.post("/portal/login", data={"phone": site.phone, "password": "long enough 1",
                                                   "csrf_token": token})
    assert signed_in.status_code == 302, signed_in.get_data(as_text=True)[:500]
    failures: list[str] = []
    valid = {"number": site.account_number, "receipt_no": "R1", "bill_no": "B1", "out_trade_no": "O1", "token": "x"}
    for rule in _get_rules(fuzz_app, ("portal.", "payments.")):
        url = _fill(rule, valid)
        for query in _queries(fuzz_app, rule, VALUES, per_param=True):
            _probe(client, url, query, failures)
        for bad_url in _converter_urls(rule, valid):
            _probe(client, bad_url, {}, failures)
    api = {"Authorization": f"Bearer {make_token(fuzz_app, group)}"}
    ids = {"account_id": site.account_id, "meter_id": site.meter_id, "property_id": group.property_id,
           "room_id": group.room_id, "command_id": 1, "key": "usage"}
    for rule in _get_rules(fuzz_app, ("api.",)):
        url = _fill(rule, ids)
        for query in _queries(fuzz_app, rule, SHARP, per_param=True):
            _probe(client, url, query, failures, api)
        for bad_url in _converter_urls(rule, ids):
            _probe(client, bad_url, {}, failures, api)
    _check(failures)
