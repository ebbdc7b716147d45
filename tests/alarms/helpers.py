"""Shared set-up for alarm and report tests: meters, a prepaid account, readings in meter_latest."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import text

from meterhub.db import service_session
from meterhub.devices.models import Gateway
from tests.prepaid.conftest import add_meters

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Site:
    app: object
    group_id: int
    property_id: int
    room_id: int
    gateway_id: int
    meters: list[int] = field(default_factory=list)
    account_id: int | None = None


def make_site(app, tenant, n: int = 2, utility: str = "electricity", account: bool = True,
              second_room: bool = False) -> Site:
    """``n`` meters in ``tenant``'s first room (or, with ``second_room``, its room in the second property), the
    first bound to a new open prepaid account."""
    from meterhub.modules.prepaid import accounts

    property_id, room_id = ((tenant.property2_id, tenant.room2_id) if second_room
                            else (tenant.property_id, tenant.room_id))
    with app.app_context(), service_session() as s:
        gw = Gateway(group_id=tenant.group_id, property_id=property_id, name=f"gw-{uuid.uuid4().hex[:6]}",
                     host="127.0.0.1", port=1)
        s.add(gw)
        s.flush()
        meters = add_meters(s, tenant.group_id, property_id, gw.id, room_id, n, utility=utility)
        site = Site(app, tenant.group_id, property_id, room_id, gw.id, meters)
        if account:
            from meterhub.tariffs import service as tariffs
            from meterhub.tariffs.pricing import PlanVersion

            tariff = tariffs.create_tariff(s, tenant.group_id, f"Flat {uuid.uuid4().hex[:6]}")
            tariffs.add_version(s, tariff, EPOCH, PlanVersion("flat", tariffs.flat_prices(Decimal("1.00"))))
            tariffs.assign(s, tenant.group_id, "property", property_id, tariff)
            acc = accounts.create_account(s, tenant.group_id, property_id, meters[:1], room_id=room_id,
                                          customer_name=f"Holder {tenant.marker}", phone="13800000000", actor="test")
            site.account_id = acc.id
        return site


def set_latest(session, group_id: int, meter_id: int, ts: datetime, **values) -> None:
    """Upsert ``meter_latest`` of a meter with these quantity values."""
    cols = ", ".join(values)
    params = ", ".join(f":{k}" for k in values)
    updates = ", ".join(f"{k} = excluded.{k}" for k in values)
    session.execute(text(
        f"INSERT INTO meter_latest (group_id, meter_id, ts, good_ts, quality{', ' + cols if cols else ''}) "
        f"VALUES (:g, :m, :ts, :ts, 0{', ' + params if params else ''}) ON CONFLICT (meter_id) DO UPDATE SET "
        f"ts = excluded.ts, good_ts = excluded.good_ts{', ' + updates if updates else ''}"),
        {"g": group_id, "m": meter_id, "ts": ts, **values})


def set_limit(session, meter_id: int, limit: str | None) -> None:
    session.execute(text("UPDATE meters SET overload_limit_kw = :l WHERE id = :m"),
                    {"l": Decimal(limit) if limit else None, "m": meter_id})
