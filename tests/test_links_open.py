"""No console page links to a page its viewer may not open.

For every role of the demo (admin, finance, manager, cashier, electrician, auditor), an operator signs in and the
test walks the console breadth-first from the dashboard over same-site GET links (every link on every page reached,
bounded by kind of page), failing on any link that answers 403, 404, 405 or a server error. Links are shown through
``webui.links`` (``may_open`` / ``page_url`` / ``link_to``), which reads the view's ``permission_required`` and
the group's switched-off modules, so a role without ``money.view`` gets the room's name, not a link to a 404.
"""

from __future__ import annotations

import re
from collections import deque
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urljoin, urlsplit

import pytest

from meterhub.db import service_session

DEMO_ROLES = ["group_admin", "group_finance", "property_manager", "cashier", "electrician", "auditor"]
MAX_PAGES = 150
# Not followed, with the reason: files (exports and receipts as xlsx/csv/pdf, charts' JSON) are downloads with
# their own tests and cost a report run each; /api is the token API, not the console; the portal is the tenants'
# site with its own sign-in; static files are not pages.
SKIP = re.compile(r"(\.(xlsx|csv|pdf|svg|png|json|zip)$|^/api/|^/portal|^/static/|/download|/export)")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href and not href.startswith(("#", "mailto:", "tel:", "javascript:")):
            self.hrefs.append(href)


def links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.hrefs


def kind_of(url: str) -> str:
    """A kind of link: the path with ids as N, plus the names (not values) of its query parameters."""
    parts = urlsplit(url)
    path = re.sub(r"/\d+(?=/|$)", "/N", parts.path.rstrip("/") or "/")
    return path + "?" + ",".join(sorted({k for k, _ in parse_qsl(parts.query, keep_blank_values=True)}))


def crawl(client, start: str = "/") -> tuple[list[str], int]:
    """Every link kind reachable from ``start``: (failures as 'page -> link status', pages fetched)."""
    seen: set[str] = {kind_of(start)}
    queue: deque[tuple[str, str]] = deque([("(start)", start)])
    failures: list[str] = []
    fetched = 0
    while queue and fetched < MAX_PAGES:
        source, url = queue.popleft()
        response = client.get(url)
        fetched += 1
        status = response.status_code
        if status in (403, 404, 405) or status >= 500:
            failures.append(f"{source} -> {url}: {status}")
            continue
        if status in (301, 302, 303, 307, 308):
            targets = [response.headers["Location"]]
        elif status == 200 and response.mimetype == "text/html":
            targets = links(response.get_data(as_text=True))
        else:
            continue
        for href in targets:
            target = urljoin("http://localhost" + url, href)
            parts = urlsplit(target)
            if parts.netloc != "localhost" or SKIP.search(parts.path):
                continue
            local = parts.path + (f"?{parts.query}" if parts.query else "")
            if kind_of(local) not in seen:
                seen.add(kind_of(local))
                queue.append((urlsplit(url).path, local))
    return failures, fetched


@pytest.fixture()
def world(app, group):
    """The group's objects the pages link between: an account with a top-up (P1), a room without an account
    (P2), an alarm on the account and on each gateway, an apportioning rule and run, a billing item, a batch, a
    bill, a payment channel and a price plan."""
    from meterhub.alarms.engine import raise_alarm

    account_id = group.account_id
    group.operations, group.payment_channel_id, group.tariff_id  # apportioning, billing items, batch, bill; channel; plan
    with app.app_context(), service_session() as s:
        raise_alarm(s, group.group_id, "low_balance_1", account_id=account_id, detail={"balance": "6.00", "level": 1})
    return group


@pytest.mark.parametrize("role", DEMO_ROLES)
def test_no_link_answers_404_for_its_viewer(role, app, client, operator, world):
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a broken page must show as a 500 here, not as a crash
    operator(role, all_properties=True)
    failures, fetched = crawl(client)
    assert 5 < fetched < MAX_PAGES, f"{role}: the crawl fetched {fetched} links (the bound is {MAX_PAGES})"
    assert not failures, f"{role}: links its viewer may not open:\n" + "\n".join(failures)


def test_the_crawl_reports_a_link_that_answers_404(app, client, operator, world):
    """The check can fail: a link to a page the role may not open (the room monitor for an electrician) is
    reported, with the page that linked it."""
    operator("electrician", all_properties=True)
    failures, _ = crawl(client, "/prepaid/rooms")
    assert failures == ["(start) -> /prepaid/rooms: 404"]


def test_link_helpers_follow_the_views_permission(app, world):
    from flask import render_template_string
    from flask_login import login_user

    from meterhub.extensions import db
    from meterhub.tenants.models import Operator
    from meterhub.db import use_group

    operator_id = world.operator("electrician", all_properties=True)[2]
    with app.test_request_context():
        use_group(world.group_id)
        login_user(db.session.get(Operator, operator_id))
        html = render_template_string(
            "{{ may_open('prepaid.rooms') }}|{{ may_open('console.properties') }}|{{ page_url('prepaid.rooms') }}|"
            "{{ link_to('Room <1>', 'prepaid.account', account_id=1) }}|"
            "{{ link_to('Props', 'console.properties', class_='small') }}|{{ may_open('no.such_page') }}")
    assert html == 'False|True|None|Room &lt;1&gt;|<a href="/properties" class="small">Props</a>|False'
