"""SQL statements per page (issue 19 items 5–6): the pages people wait on — the console account page, the tenant
portal's account page, the cashier counter, the room monitor and the dashboard — run a bounded number of statements
that does not grow with the rows they show. Two groups are built alike, one with 3 and one with 30 meters,
top-ups, charged hours, commands and rooms; each page must run the same number of statements for both (no query per
row: N+1), and at most its budget. Counted with SQLAlchemy's ``before_cursor_execute`` on every engine during one
test-client request; no timing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import event
from sqlalchemy.engine import Engine

from meterhub.db import service_session
from meterhub.devices.models import Gateway, Meter
from meterhub.modules.prepaid import accounts, cashier
from meterhub.modules.prepaid.charging import charge_new_intervals
from tests.portal.conftest import codes, sign_in_with_code  # noqa: F401  (the portal's sign-in code fixture)
from tests.prepaid.conftest import EPOCH, add_meters, write_readings

#: Statements each page may run, whatever the number of rows it shows (measured, with one to spare). Measured
#: 2026-12-08: account page 13, portal account 17 (both 4 fewer with a stored forecast: here the days left are
#: projected on the spot), counter 5, counter search 7, room monitor 6, dashboard 15, one property's 16.
BUDGET = {"account_page": 14, "portal_account": 18, "counter": 6, "counter_search": 8, "room_monitor": 7,
          "dashboard": 16, "dashboard_property": 17}


@contextmanager
def statements() -> Iterator[list[str]]:
    """Every SQL statement any engine sends while the block runs."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def build(app, tenant, n: int) -> dict:
    """One account over ``n`` meters in the tenant's first room, ``n`` top-ups, ``n`` charged hours per meter, ``n``
    commands, and ``n`` more rooms each with a meter and an account of its own."""
    from meterhub.commands.service import create_command
    from meterhub.tenants import service
    from meterhub.tenants.models import Floor

    phone = "13" + str(uuid.uuid4().int)[:9]
    with app.app_context(), service_session() as s:
        gw = Gateway(group_id=tenant.group_id, property_id=tenant.property_id, name=f"gw-{uuid.uuid4().hex[:6]}",
                     host="127.0.0.1", port=1)
        s.add(gw)
        s.flush()
        from meterhub.tariffs import service as tariffs
        from meterhub.tariffs.pricing import PlanVersion

        tariff = tariffs.create_tariff(s, tenant.group_id, "Flat 1.00")
        tariffs.add_version(s, tariff, EPOCH, PlanVersion("flat", tariffs.flat_prices(Decimal("1.00"))))
        tariffs.assign(s, tenant.group_id, "property", tenant.property_id, tariff)
        meters = add_meters(s, tenant.group_id, tenant.property_id, gw.id, tenant.room_id, n)
        floor = s.get(Floor, tenant.floor_id)
        others = []
        for i in range(n):
            room = service.create_room(s, floor, f"9{i:02d}", f"Room {i}", "10")
            others.append((room.id, add_meters(s, tenant.group_id, tenant.property_id, gw.id, room.id, 1)[0]))
        write_readings(s, tenant.group_id, [(m, EPOCH, Decimal(0)) for m in meters + [m for _, m in others]])
    with app.app_context(), service_session() as s:
        acc = accounts.create_account(s, tenant.group_id, tenant.property_id, meters, room_id=tenant.room_id,
                                      customer_name=f"Shop {tenant.marker}", phone=phone, actor="t", evaluate=False)
        for i in range(n):
            cashier.topup(s, tenant.group_id, acc.id, "100.00", "cash", uuid.uuid4().hex, actor="t")
        for i, (room_id, meter_id) in enumerate(others):
            other = accounts.create_account(s, tenant.group_id, tenant.property_id, [meter_id], room_id=room_id,
                                            customer_name=f"Tenant {i}", actor="t", evaluate=False)
            cashier.topup(s, tenant.group_id, other.id, "10.00", "cash", uuid.uuid4().hex, actor="t")
        for meter_id in meters:
            create_command(s, s.get(Meter, meter_id), "read_now", actor="t")
        account_id, number = acc.id, acc.number
    with app.app_context(), service_session() as s:
        write_readings(s, tenant.group_id, [(m, EPOCH + timedelta(hours=h), Decimal(h))
                                            for m in meters for h in range(1, n + 1)])
        charge_new_intervals(s, control=False)
    return {"account_id": account_id, "number": number, "phone": phone}


def console_counts(app, tenant, ids: dict) -> dict[str, int]:
    """Statements of each console page for a group admin of ``tenant`` (a client of its own)."""
    from tests.conftest import csrf_token

    client = app.test_client()
    username, password, _ = tenant.operator("group_admin", all_properties=True)
    signed_in = client.post("/login", data={"username": username, "password": password,
                                            "csrf_token": csrf_token(client)})
    assert signed_in.status_code == 302
    pages = {"account_page": (f"/prepaid/accounts/{ids['account_id']}", ids["number"]),
             "counter": ("/prepaid/counter", 'id="takings"'), "counter_search": ("/prepaid/counter?q=Tenant", "Tenant 0"),
             "room_monitor": ("/prepaid/rooms", "Tenant 0"), "dashboard": ("/dashboard/", 'id="'),
             "dashboard_property": (f"/dashboard/properties/{tenant.property_id}", 'id="')}
    return {name: count(client, url, must) for name, (url, must) in pages.items()}


def count(client, url: str, must: str) -> int:
    """Statements of one request for ``url`` (asked once before: what a process caches is not per request)."""
    client.get(url)
    with statements() as seen:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    assert must in response.get_data(as_text=True), (url, must)
    return len(seen)


def portal_count(app, codes, ids: dict) -> int:  # noqa: F811
    """Statements of the tenant portal's account page for its owner (the portal home redirects there)."""
    client = app.test_client()
    assert sign_in_with_code(client, codes, ids["phone"]).status_code == 302
    assert client.get("/portal/").headers["Location"].endswith(f"/portal/a/{ids['number']}")
    return count(client, f"/portal/a/{ids['number']}", ids["number"])


def test_statements_per_page_do_not_grow_with_rows(app, group, other_group, codes):  # noqa: F811
    small, large = build(app, group, 3), build(app, other_group, 30)
    counts = {"small": console_counts(app, group, small), "large": console_counts(app, other_group, large)}
    counts["small"]["portal_account"] = portal_count(app, codes, small)
    counts["large"]["portal_account"] = portal_count(app, codes, large)
    print(counts)
    for name, budget in BUDGET.items():
        assert counts["large"][name] == counts["small"][name], f"{name} runs a statement per row: {counts}"
        assert counts["small"][name] <= budget, f"{name} runs more statements than its budget {budget}: {counts}"


def test_the_count_sees_a_statement_per_row(app, group):
    """The counter itself: a loop of lookups is counted one by one (so the test above can fail)."""
    from sqlalchemy import text

    from meterhub.extensions import db

    with app.app_context(), statements() as seen:
        for i in range(5):
            db.session.execute(text("SELECT :i"), {"i": i})
        db.session.rollback()
    assert sum(1 for st in seen if st.startswith("SELECT %(i)s")) == 5


def test_a_property_is_read_once_per_request(app, group):
    """What a request's callers look up by key again and again (the property's time zone, the group's modules) is
    read once: the session keeps a loaded group or property although the first caller let go of it."""
    import gc

    from meterhub.db import use_group
    from meterhub.extensions import db
    from meterhub.tenants.models import Group, Property

    with app.test_request_context("/"), statements() as seen:
        use_group(group.group_id)
        for _ in range(3):
            assert db.session.get(Property, group.property_id).code == "P1"
            assert db.session.get(Group, group.group_id).id == group.group_id
            gc.collect()  # the identity map holds objects weakly: nothing else keeps them
        db.session.rollback()
    assert sum(1 for st in seen if "FROM properties" in st) == 1, seen
    assert sum(1 for st in seen if "FROM groups" in st) == 1, seen
