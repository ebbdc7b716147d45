"""The demo group: properties, rooms, operators of every role, and a simulated fleet onboarded through
the same code path as real devices (read before saving). Idempotent: running it again changes nothing."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .devices.models import Device, Gateway
from .devices.onboarding import TRANSPORT_FRAMING, DeviceSpec, create_gateway, onboard_device
from .tenants import audit, service
from .tenants.models import Building, Floor, Group, Property, Room

log = logging.getLogger(__name__)

DEMO_GROUP = "demo"
#: username, password, role, properties (codes; empty = whole group)
DEMO_OPERATORS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("admin", "demo-admin", "group_admin", ()),
    ("finance", "demo-finance", "group_finance", ()),
    ("manager", "demo-manager", "property_manager", ("MALL",)),
    ("cashier", "demo-cashier", "cashier", ("MALL",)),
    ("electrician", "demo-electrician", "electrician", ("MALL", "DORM")),
    ("auditor", "demo-auditor", "auditor", ("MALL", "DORM")),
)


def seed_tenancy(session: Session) -> Group:
    """Create the demo group with a mall and a dorm campus, unless it exists."""
    group = session.execute(select(Group).where(Group.code == DEMO_GROUP)).scalar()
    if group is not None:
        return group
    group = service.create_group(session, "阳光物业集团 Sunshine Property Group", DEMO_GROUP)
    # Read every minute (the default is 30) so that the demo's balances visibly move.
    mall = service.create_property(session, group.id, "星河购物中心 Galaxy Mall", "MALL", "深圳市南山区",
                                   reading_interval_min=1)
    dorm = service.create_property(session, group.id, "东湖学生公寓 East Lake Dorms", "DORM", "武汉市洪山区",
                                   reading_interval_min=1)
    service.bulk_create_rooms(session, service.create_building(session, mall, "A"), 1, 3, "01", "12", "45.00")
    service.bulk_create_rooms(session, service.create_building(session, dorm, "1"), 1, 6, "01", "20", "18.00",
                              kind="dorm")
    for username, password, role, codes in DEMO_OPERATORS:
        ids = [p.id for p in (mall, dorm) if p.code in codes]
        service.create_operator(session, group.id, username, password, role, username.title(),
                                all_properties=not codes, property_ids=ids)
    audit.record(session, group.id, "demo.seed", actor="demo")
    return group


def _rooms(session: Session, property_id: int) -> list[int]:
    return list(session.execute(
        select(Room.id).join(Floor).join(Building).where(Room.property_id == property_id)
        .order_by(Building.name, Floor.level, Room.number)).scalars())


def onboard_fleet(session: Session, group: Group, fleet: dict[str, Any]) -> int:
    """Onboard the simulated fleet described by ``meterhub simulate --onboarding-file`` (reads each device)."""
    props = {p.code: p for p in session.execute(select(Property).where(Property.group_id == group.id)).scalars()}
    free_rooms = {code: _rooms(session, p.id) for code, p in props.items()}
    created = 0
    gateways: dict[str, Gateway] = {}
    for index, gw in enumerate(fleet["gateways"]):
        prop = props["MALL" if index % 2 == 0 else "DORM"]
        gateway = session.execute(select(Gateway).where(Gateway.group_id == group.id,
                                                        Gateway.name == gw["name"])).scalar()
        if gateway is None:
            by_transport = {transport: framing for framing, transport in TRANSPORT_FRAMING.items()}
            framing = by_transport.get(gw["framing"], gw["framing"])
            gateway = create_gateway(session, prop, gw["name"], gw["host"], gw["port"], framing, gw.get("bus"))
        gateways[gw["name"]] = gateway
    for dev in fleet["devices"]:
        gateway = gateways[dev["gateway"]]
        if session.execute(select(Device.id).where(Device.gateway_id == gateway.id,
                                                   Device.serial == dev["serial"])).first():
            continue
        code = "MALL" if gateway.property_id == props["MALL"].id else "DORM"
        rooms = free_rooms[code]
        room_ids = [rooms.pop(0) if rooms else None for _ in range(int(dev.get("channels", 1)))]
        onboard_device(session, gateway, DeviceSpec(dev["driver"], dev["address"], dev["serial"],
                                                    dev.get("config", {}), room_ids), verify=True)
        created += 1
    return created


#: The demo shop owner's portal login (the first demo account is opened with this phone).
DEMO_PORTAL = ("13800000000", "demo-shop")

#: A typical Chinese commercial TOU day (minutes from midnight): valley at night, peaks morning and evening.
DEMO_TOU = ((0, 480, "valley"), (480, 600, "flat"), (600, 690, "peak"), (690, 780, "sharp"),
            (780, 1080, "flat"), (1080, 1260, "peak"), (1260, 1380, "flat"), (1380, 1440, "valley"))


def seed_prepaid(session: Session, group: Group) -> int:
    """Price plans, and prepaid accounts on the metered rooms with varied balances (idempotent)."""
    from datetime import datetime, timezone
    from decimal import Decimal

    from .devices.models import Meter
    from .modules.prepaid import accounts, cashier
    from .modules.prepaid.models import PrepaidAccount
    from .tariffs import service as tariffs
    from .tariffs.models import Tariff
    from .tariffs.pricing import PlanVersion

    if session.execute(select(Tariff.id).where(Tariff.group_id == group.id)).first():
        return 0
    since = datetime(2024, 1, 1, tzinfo=timezone.utc)
    mall_plan = tariffs.create_tariff(session, group.id, "商业分时电价 Commercial TOU")
    tariffs.add_version(session, mall_plan, since, PlanVersion("tou", {
        "sharp": Decimal("1.35"), "peak": Decimal("1.10"), "flat": Decimal("0.75"), "valley": Decimal("0.38")},
        periods=DEMO_TOU))
    dorm_plan = tariffs.create_tariff(session, group.id, "宿舍电价 Dorm flat")
    tariffs.add_version(session, dorm_plan, since, PlanVersion("flat", tariffs.flat_prices(Decimal("0.60"))))
    water_plan = tariffs.create_tariff(session, group.id, "阶梯水价 Tiered water", utility="water")
    tariffs.add_version(session, water_plan, since, PlanVersion(
        "tiered", tariffs.flat_prices(Decimal("3.50")), tiers=((Decimal("10"), Decimal("1.20")),)))
    props = {p.code: p for p in session.execute(select(Property).where(Property.group_id == group.id)).scalars()}
    for code, plan in (("MALL", mall_plan), ("DORM", dorm_plan)):
        tariffs.assign(session, group.id, "property", props[code].id, plan)
        tariffs.assign(session, group.id, "property", props[code].id, water_plan)
    balances = ("300.00", "150.00", "18.00", "6.00", "0.50", "80.00")
    opened = 0
    meters = session.execute(select(Meter).where(Meter.group_id == group.id, Meter.room_id.is_not(None))
                             .order_by(Meter.id)).scalars().all()
    for index, meter in enumerate(meters):
        if session.execute(select(PrepaidAccount.id).where(PrepaidAccount.room_id == meter.room_id)).first():
            continue
        account = accounts.create_account(session, group.id, meter.property_id, [meter.id], room_id=meter.room_id,
                                          customer_name=f"租户 Tenant {index + 1:03d}",
                                          phone=f"138{index:08d}", actor="demo")
        cashier.topup(session, group.id, account.id, balances[index % len(balances)], "cash",
                      f"demo-open-{account.id}", actor="demo")
        opened += 1
    from .payments.orders import create_channel
    from .portal import service as portal

    create_channel(session, group.id, "sandbox", "沙箱支付 Sandbox pay", actor="demo")
    phone, password = DEMO_PORTAL
    portal.set_password(session, portal.claim(session, group.id, phone), password)
    return opened


def load_fleet(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))
