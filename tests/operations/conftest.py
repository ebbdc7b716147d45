"""Operations fixtures: a property with a parent meter, three accounts each on its own meter (a sub-meter),
rooms of 10/20/30 m², a flat 1.00 CNY/kWh plan, and our plugins registered on the plugin manager."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from meterhub.db import service_session
from meterhub.devices.models import Gateway
from meterhub.modules.prepaid import accounts, cashier
from meterhub.modules.prepaid.models import PrepaidAccount
from meterhub.tariffs import service as tariffs
from meterhub.tariffs.pricing import PlanVersion
from meterhub.tenants import service as tenancy
from meterhub.tenants.models import Floor, Property
from tests.prepaid.conftest import add_meters, write_readings

SH = ZoneInfo("Asia/Shanghai")
D = Decimal


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=SH)


@dataclass
class Site:
    app: object
    group_id: int
    property_id: int
    gateway_id: int
    parent: int = 0
    meters: list[int] = field(default_factory=list)  # one per account (the sub-meters)
    accounts: list[int] = field(default_factory=list)
    rooms: list[int] = field(default_factory=list)
    tariff_id: int = 0

    def session(self):
        return service_session()


@pytest.fixture()
def site(app, group) -> Site:
    with app.app_context(), service_session() as s:
        prop = s.get(Property, group.property_id)
        gw = Gateway(group_id=group.group_id, property_id=prop.id, name=f"gw-{uuid.uuid4().hex[:6]}",
                     host="127.0.0.1", port=1)
        s.add(gw)
        s.flush()
        floor = s.get(Floor, group.floor_id)
        rooms = [tenancy.create_room(s, floor, f"3{i}{uuid.uuid4().hex[:3]}", f"Room {i}", str(10 * (i + 1)))
                 for i in range(3)]
        parent = add_meters(s, group.group_id, prop.id, gw.id, None, 1)[0]
        meters = [add_meters(s, group.group_id, prop.id, gw.id, r.id, 1)[0] for r in rooms]
        tariff = tariffs.create_tariff(s, group.group_id, f"Flat 1.00 {uuid.uuid4().hex[:4]}")
        tariffs.add_version(s, tariff, datetime(2020, 1, 1, tzinfo=UTC),
                            PlanVersion("flat", tariffs.flat_prices(D("1.00"))))
        tariffs.assign(s, group.group_id, "property", prop.id, tariff)
        write_readings(s, group.group_id, [(m, local(2025, 12, 1), D(0)) for m in [parent, *meters]])
        site = Site(app, group.group_id, prop.id, gw.id, parent, meters, rooms=[r.id for r in rooms],
                    tariff_id=tariff.id)
    with app.app_context(), service_session() as s:
        for i, (meter, room) in enumerate(zip(meters, site.rooms, strict=True)):
            account = accounts.create_account(s, group.group_id, prop.id, [meter], room_id=room,
                                              customer_name=f"Tenant {i}", actor="t")
            cashier.topup(s, group.group_id, account.id, "200.00", "cash", f"seed-{account.id}", actor="t")
            account.opened_at = local(2025, 12, 1)
            site.accounts.append(account.id)
    return site


def readings(site: Site, rows: list[tuple[int, datetime, str]]) -> None:
    with site.app.app_context(), service_session() as s:
        write_readings(s, site.group_id, [(m, ts, D(v)) for m, ts, v in rows])


def close_on(site: Site, account_id: int, when: datetime) -> None:
    """Close an account at the counter and date the closing ``when`` (the past, for the test)."""
    with site.app.app_context(), service_session() as s:
        accounts.close_account(s, site.group_id, account_id, f"close-{account_id}", actor="t")
        s.get(PrepaidAccount, account_id).closed_at = when
