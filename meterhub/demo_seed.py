"""The demo group: properties, rooms, operators of every role, and a simulated fleet onboarded through
the same code path as real devices (read before saving). Idempotent: running it again changes nothing."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from .devices.models import Device, Gateway
from .devices.onboarding import TRANSPORT_FRAMING, DeviceSpec, create_gateway, onboard_device
from .tenants import audit, service
from .tenants.models import Building, Floor, Group, Property, Room
from .timeseries.ingest import Reading

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


def seed_tenancy(session: Session, code: str = DEMO_GROUP) -> Group:
    """Create the demo group (``code``) with a mall and a dorm campus, unless it exists."""
    group = session.execute(select(Group).where(Group.code == code)).scalar()
    if group is not None:
        return group
    group = service.create_group(session, "阳光物业集团 Sunshine Property Group" + ("" if code == DEMO_GROUP else f" {code}"),
                                 code)
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
        login = username if code == DEMO_GROUP else f"{username}@{code}"  # usernames are unique platform-wide
        service.create_operator(session, group.id, login, password, role, username.title(),
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


#: The identity of the demo's simulated 4G meter (``meterhub simulate-4g``), onboarded from its label before it
#: first dials in, as an installer does.
DEMO_4G_SERIAL = "86023000000000000001"


def onboard_dialin_meter(session: Session, group: Group) -> bool:
    """The mall's 4G meter: an ``acrel-4g`` gateway with one DDSY1352 (idempotent); True when created."""
    prop = session.execute(select(Property).where(Property.group_id == group.id, Property.code == "MALL")).scalar_one()
    if session.execute(select(Device.id).where(Device.group_id == group.id, Device.serial == DEMO_4G_SERIAL)).first():
        return False
    gateway = create_gateway(session, prop, "4G-meter-1", "", 0, "acrel-4g")
    onboard_device(session, gateway, DeviceSpec("acrel_dtsd1352", "1", DEMO_4G_SERIAL, {"variant": "ddsy1352"},
                                                name="4G meter (dials in)"), verify=False)
    return True


#: How far back the demo's readings go (a year and a month: month-on-month and year-on-year have data).
HISTORY_DAYS = 400
HISTORY_STEP = timedelta(hours=1)
HISTORY_MARGIN = Decimal("0.2")  # 0.01 kWh steps at a CT ratio of 20


def history_readings(fleet: dict[str, Any], meters: dict[tuple[str, str, int], tuple[int, int]],
                     days: int = HISTORY_DAYS, step: timedelta = HISTORY_STEP) -> Iterator[Reading]:
    """Hourly readings of the simulated meters over the ``days`` before their simulator started, and one at its
    start, from the load profiles in the onboarding file (``simulate --installed``): the counters each meter
    would have shown.

    ``meters`` maps (gateway name, device serial, channel) to (meter id, group id). Every value is
    :data:`HISTORY_MARGIN` below the profile, so the last of them is never above the first live reading, whose
    registers count in steps of 0.01 times the CT/PT ratio (a constant offset: no usage changes).
    """
    from .simulator.model import RATE_NAMES, profile_energy, profile_volume

    end = datetime.fromisoformat(fleet["installed_at"])  # naive device time, as the simulator's clock
    last = (end - timedelta(microseconds=1)).replace(minute=0, second=0, microsecond=0)  # the last full hour
    count = int(timedelta(days=days) / step)
    # device time is this machine's local time; the last reading is at the start of the simulator (the meter
    # was heard from until then, so the platform does not take it for offline before its first live poll)
    times = [(t, t.astimezone()) for t in [*(last - step * (count - 1 - i) for i in range(count)), end]]
    cent = Decimal("0.01")

    def below(value: Decimal) -> Decimal:
        return max(value - HISTORY_MARGIN, Decimal(0)).quantize(cent, ROUND_FLOOR)
    for device in fleet["devices"]:
        for channel, profile in enumerate(device.get("profile") or (), start=1):
            found = meters.get((device["gateway"], device["serial"], channel))
            if found is None:
                continue
            meter_id, group_id = found
            for local, ts in times:
                if "base_m3h" in profile:
                    values = {"water_m3": below(profile_volume(profile["base_m3h"], local))}
                else:
                    energy = profile_energy(profile["base_kw"], local)
                    values = {f"energy_{RATE_NAMES[r]}_kwh": below(v) for r, v in energy.items()}
                    values["energy_kwh"] = below(sum(energy.values()))
                yield Reading(group_id, meter_id, ts, values, source="import")


def seed_history(session: Session, group: Group, fleet: dict[str, Any], days: int = HISTORY_DAYS) -> int:
    """Store the simulated meters' past readings (:func:`history_readings`) through the ingest path and roll
    them up, so reports and charts have a year of history from the first start; meters that already have
    readings are left alone (idempotent). Returns the number of readings stored.

    Run it after the demo's accounts are opened: an account opened on a meter without readings takes the first
    live reading as its baseline, so the past is never charged.
    """
    from .db import service_engine, service_session
    from .timeseries.freshness import refresh_after_ingest, uses_timescale
    from .timeseries.ingest import ingest
    from .timeseries.rollups import start_watermark

    if not fleet.get("installed_at"):
        return 0
    rows = session.execute(text(
        "SELECT g.name, d.serial, m.channel, m.id, m.group_id FROM meters m "
        "JOIN devices d ON d.id = m.device_id JOIN gateways g ON g.id = d.gateway_id "
        "WHERE m.group_id = :g AND NOT EXISTS (SELECT 1 FROM meter_latest l WHERE l.meter_id = m.id)"),
        {"g": group.id}).all()
    if not rows:
        return 0
    started = datetime.now(timezone.utc)
    session.commit()  # the meters are visible to the ingest connections
    result = ingest(history_readings(fleet, {(r[0], r[1], r[2]): (r[3], r[4]) for r in rows}, days),
                    notify=False, fresh=False)
    # one usage refresh for the whole history (rollups or aggregates), not one per batch
    if refresh_after_ingest(service_engine(), started, [r[3] for r in rows], started - timedelta(days=days + 1),
                            started) and not uses_timescale(service_engine()):
        # rolled up in full: the periodic rollup job starts from here rather than rolling the year up again
        with service_session() as fresh:
            start_watermark(fresh)
    return result.stored


#: The demo shop owner's portal login (the first demo account is opened with this phone).
DEMO_PORTAL = ("13800000000", "demo-shop")

#: A typical Chinese commercial TOU day (minutes from midnight): valley at night, peaks morning and evening.
DEMO_TOU = ((0, 480, "valley"), (480, 600, "flat"), (600, 690, "peak"), (690, 780, "sharp"),
            (780, 1080, "flat"), (1080, 1260, "peak"), (1260, 1380, "flat"), (1380, 1440, "valley"))


def seed_prepaid(session: Session, group: Group) -> int:
    """Price plans, and prepaid accounts on the metered rooms with varied balances (idempotent)."""
    from .devices.models import Meter
    from .modules.prepaid import accounts, cashier
    from .modules.prepaid.models import PrepaidAccount
    from .tariffs import service as tariffs
    from .tariffs.models import Tariff
    from .tariffs.pricing import PlanVersion

    if session.execute(select(Tariff.id).where(Tariff.group_id == group.id)).first():
        return 0
    since = datetime(2024, 1, 1, tzinfo=timezone.utc)
    props = {p.code: p for p in session.execute(select(Property).where(Property.group_id == group.id)).scalars()}
    # the mall's and the dorm's plans belong to their property; the water plan is group-wide (HQ changes it)
    mall_plan = tariffs.create_tariff(session, group.id, "商业分时电价 Commercial TOU", property_id=props["MALL"].id)
    tariffs.add_version(session, mall_plan, since, PlanVersion("tou", {
        "sharp": Decimal("1.35"), "peak": Decimal("1.10"), "flat": Decimal("0.75"), "valley": Decimal("0.38")},
        periods=DEMO_TOU))
    dorm_plan = tariffs.create_tariff(session, group.id, "宿舍电价 Dorm flat", property_id=props["DORM"].id)
    tariffs.add_version(session, dorm_plan, since, PlanVersion("flat", tariffs.flat_prices(Decimal("0.60"))))
    water_plan = tariffs.create_tariff(session, group.id, "阶梯水价 Tiered water", utility="water")
    tariffs.add_version(session, water_plan, since, PlanVersion(
        "tiered", tariffs.flat_prices(Decimal("3.50")), tiers=((Decimal("10"), Decimal("1.20")),)))
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
                                          phone=f"138{index:08d}", actor="demo", evaluate=False)
        # opened with its first payment: evaluated once, with the money (no arrears alarm, no trip and restore)
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
