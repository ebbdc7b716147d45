"""Shared helpers of the API, payment and portal tests: a room with a meter and an open prepaid account,
API tokens for an operator of a role."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from meterhub.db import service_session
from meterhub.devices.models import Gateway
from meterhub.tariffs import service as tariffs
from meterhub.tariffs.pricing import PlanVersion

@dataclass
class Site:
    """A tenant's room with one meter and an open account (balance 0) on a flat 1.00 CNY/kWh plan."""

    tenant: object
    meter_id: int
    account_id: int
    account_number: str
    phone: str


def open_site(app, tenant, room_id: int | None = None, property_id: int | None = None,
              meter_id: int | None = None) -> Site:
    """Meter (new, or ``meter_id``) + account in ``room_id`` (default the tenant's P1 room)."""
    from tests.prepaid.conftest import add_meters

    from meterhub.modules.prepaid import accounts

    room_id = room_id or tenant.room_id
    property_id = property_id or tenant.property_id
    phone = "13" + str(uuid.uuid4().int)[:9]
    with app.app_context(), service_session() as s:
        if meter_id is None:
            gw = Gateway(group_id=tenant.group_id, property_id=property_id, name=f"gw-{uuid.uuid4().hex[:6]}",
                         host="127.0.0.1", port=1)
            s.add(gw)
            s.flush()
            meter_id = add_meters(s, tenant.group_id, property_id, gw.id, room_id, 1)[0]
        tariff = tariffs.create_tariff(s, tenant.group_id, f"Flat {uuid.uuid4().hex[:6]}")
        tariffs.add_version(s, tariff, datetime(2026, 1, 1, tzinfo=UTC),
                            PlanVersion("flat", tariffs.flat_prices(Decimal("1.00"))))
        tariffs.assign(s, tenant.group_id, "meter", meter_id, tariff)
        acc = accounts.create_account(s, tenant.group_id, property_id, [meter_id], room_id=room_id,
                                      customer_name=f"Shop {tenant.marker}", phone=phone, actor="test")
        return Site(tenant, meter_id, acc.id, acc.number, phone)


def make_token(app, tenant, role: str = "group_admin", scopes: tuple[str, ...] = ("read", "topup", "commands"),
               properties: tuple[str, ...] = ("P1",)) -> str:
    """A fresh API token of a new operator with ``role``."""
    from meterhub.api import tokens
    from meterhub.tenants.models import Operator

    _, _, operator_id = tenant.operator(role, properties)
    with app.app_context(), service_session() as s:
        operator = s.get(Operator, operator_id)
        return tokens.create_token(s, operator, f"t-{role}", list(scopes), actor="test").secret


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
