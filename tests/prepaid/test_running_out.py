"""The dashboard's "running out within 3 days": how many per property and the ten soonest, from one statement that
lists only ten rows (issue 19 item 6) — a property none of whose rooms is among the ten keeps its count."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import text

from meterhub.db import service_session, use_group
from meterhub.modules.prepaid import accounts, cashier
from meterhub.modules.prepaid.dashboard import running_out

from .conftest import EPOCH, add_meters


def _account_running_out(s, group, property_id: int, gateway_id: int, floor, number: str, balance: str) -> int:
    """An open account in a new room, ``balance`` on it, and a stored forecast spending 25.00 a day."""
    from meterhub.tenants import service

    room = service.create_room(s, floor, number, f"Room {number}", "10")
    meter = add_meters(s, group.group_id, property_id, gateway_id, room.id, 1)[0]
    acc = accounts.create_account(s, group.group_id, property_id, [meter], room_id=room.id,
                                  customer_name=f"Tenant {number}", actor="t", evaluate=False)
    cashier.topup(s, group.group_id, acc.id, balance, "cash", uuid.uuid4().hex, actor="t")
    s.execute(text("INSERT INTO prepaid_forecasts (account_id, group_id, property_id, computed_at, status, balance, "
                   "days_left, first_fraction, cum_cost, daily_cost) VALUES (:a, :g, :p, now(), 'ok', :b, :d, 1, "
                   "ARRAY[0, 25, 50, 75, 100, 125]::numeric[], 25)"),
              {"a": acc.id, "g": group.group_id, "p": property_id, "b": Decimal(balance),
               "d": Decimal(balance) / 25})
    return acc.id


def test_counts_per_property_beyond_the_listed_ten(app, group):
    from meterhub.extensions import db
    from meterhub.tenants import service
    from meterhub.tenants.models import Floor

    from meterhub.tariffs import service as tariffs
    from meterhub.tariffs.pricing import PlanVersion
    from meterhub.tenants.models import Property

    with app.app_context(), service_session() as s:
        tariff = tariffs.create_tariff(s, group.group_id, "Flat 1.00")
        tariffs.add_version(s, tariff, EPOCH, PlanVersion("flat", tariffs.flat_prices(Decimal("1.00"))))
        for property_id in (group.property_id, group.property2_id):
            tariffs.assign(s, group.group_id, "property", property_id, tariff)
        floor = s.get(Floor, group.floor_id)
        soonest = [_account_running_out(s, group, group.property_id, group.gateway_id, floor, f"9{i:02d}",
                                        f"{30 + i}.00") for i in range(12)]  # 1.20 … 1.64 days
        building2 = service.create_building(s, s.get(Property, group.property2_id), f"E {group.marker}")
        later = _account_running_out(s, group, group.property2_id, group.gateway2_id,
                                     service.ensure_floor(s, building2, 3), "301", "60.00")  # 2.40 days
        _account_running_out(s, group, group.property2_id, group.gateway2_id,
                             service.ensure_floor(s, building2, 3), "302", "200.00")  # 8 days: not running out
    with app.test_request_context("/"):
        use_group(group.group_id)
        counts, listed = running_out(db.session, None)
        scoped_counts, scoped = running_out(db.session, [group.property2_id])
        db.session.rollback()
    assert counts == {group.property_id: 12, group.property2_id: 1}
    assert [r.account_id for r in listed] == soonest[:10]
    assert [r.room_number for r in listed] == [f"9{i:02d}" for i in range(10)]
    assert listed[0].balance == Decimal("30.00") and Decimal("1.1") < listed[0].days <= Decimal("1.2")
    assert scoped_counts == {group.property2_id: 1} and [r.account_id for r in scoped] == [later]
