"""Creating plans and versions, assigning them, and resolving the plan of a meter at a time."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from ..i18n import _l
from ..devices.models import Meter
from ..errors import NotFound, ValidationError
from ..tenants.models import Room
from .models import RATES, SCOPES, Tariff, TariffAssignment, TariffPeriod, TariffTier, TariffVersion
from .pricing import PlanVersion, validate_version


def create_tariff(session: Session, group_id: int, name: str, utility: str = "electricity",
                  property_id: int | None = None) -> Tariff:
    """A new, empty price plan of one property, or of the whole group when ``property_id`` is None."""
    if utility not in ("electricity", "water"):
        raise ValidationError(_l("utility %(utility)r must be electricity or water", utility=utility), {"utility": "invalid"})
    tariff = Tariff(group_id=group_id, name=name, utility=utility, property_id=property_id)
    session.add(tariff)
    session.flush()
    return tariff


def add_version(session: Session, tariff: Tariff, effective_from: datetime, version: PlanVersion) -> TariffVersion:
    """Add prices effective from ``effective_from`` (timezone-aware); earlier intervals keep old prices."""
    if effective_from.tzinfo is None:
        raise ValidationError(_l("effective_from must carry a time zone"), {"effective_from": "naive"})
    validate_version(version)
    if tariff.utility == "water" and version.kind not in ("flat", "tiered"):
        raise ValidationError(_l("a water plan is flat or tiered per m³"), {"kind": "water"})
    row = TariffVersion(
        group_id=tariff.group_id, tariff_id=tariff.id, effective_from=effective_from, kind=version.kind,
        tier_period=version.tier_period, **{f"price_{r}": version.prices[r] for r in RATES},
    )
    session.add(row)
    session.flush()
    periods = version.periods if version.kind in ("tou", "tiered_tou") else ((0, 1440, "flat"),)
    session.add_all(TariffPeriod(group_id=tariff.group_id, version_id=row.id, start_minute=s, end_minute=e, rate=r)
                    for s, e, r in periods)
    session.add_all(TariffTier(group_id=tariff.group_id, version_id=row.id, lower=lo, surcharge=sc)
                    for lo, sc in version.tiers)
    session.flush()
    return row


def flat_prices(price: Decimal) -> dict[str, Decimal]:
    """The same price for every rate (flat and tiered plans)."""
    return {rate: Decimal(price) for rate in RATES}


def assign(session: Session, group_id: int, scope: str, scope_id: int, tariff: Tariff) -> None:
    """Make ``tariff`` the plan of a property, building, room or meter (replacing the previous one)."""
    if scope not in SCOPES:
        raise ValidationError(_l("scope %(scope)r must be one of %(join)s",
                                 scope=scope, join=', '.join(SCOPES)), {"scope": "invalid"})
    if tariff.property_id is not None and target_property_id(session, scope, scope_id) != tariff.property_id:
        raise ValidationError(_l("price plan %(name)r belongs to another property; assign it only "
                                 "inside its own property or use a group-wide plan",
                                 name=tariff.name), {"tariff": "property"})
    stmt = pg_insert(TariffAssignment).values(group_id=group_id, scope=scope, scope_id=scope_id,
                                              utility=tariff.utility, tariff_id=tariff.id)
    session.execute(stmt.on_conflict_do_update(index_elements=["scope", "scope_id", "utility"],
                                               set_={"tariff_id": tariff.id}))


def target_property_id(session: Session, scope: str, scope_id: int) -> int | None:
    """The property of an assignment target (a property, building, room or meter), None if there is none."""
    from ..tenants.models import Building, Property

    if scope == "property":
        return session.execute(select(Property.id).where(Property.id == scope_id)).scalar()
    model = {"building": Building, "room": Room, "meter": Meter}[scope]
    return session.execute(select(model.property_id).where(model.id == scope_id)).scalar()


def as_plan(version: TariffVersion) -> PlanVersion:
    """The pure-data view of a stored version."""
    return PlanVersion(
        kind=version.kind,
        prices={r: getattr(version, f"price_{r}") for r in RATES},
        periods=tuple((p.start_minute, p.end_minute, p.rate) for p in version.periods),
        tiers=tuple((t.lower, t.surcharge) for t in version.tiers),
        tier_period=version.tier_period,
    )


def resolve_tariff(session: Session, meter: Meter) -> Tariff | None:
    """The plan of ``meter``: meter, then room, building, property assignment (most specific wins)."""
    room = session.get(Room, meter.room_id) if meter.room_id else None
    candidates = [("meter", meter.id), ("room", meter.room_id), ("building", room.building_id if room else None),
                  ("property", meter.property_id)]
    for scope, scope_id in candidates:
        if scope_id is None:
            continue
        tariff_id = session.execute(select(TariffAssignment.tariff_id).where(
            TariffAssignment.scope == scope, TariffAssignment.scope_id == scope_id,
            TariffAssignment.utility == meter.utility, TariffAssignment.group_id == meter.group_id)).scalar()
        if tariff_id is not None:
            return session.get(Tariff, tariff_id)
    return None


def version_at(session: Session, tariff_id: int, at: datetime) -> TariffVersion:
    """The version in force at ``at``; NotFound when the plan had no prices yet."""
    version = session.execute(
        select(TariffVersion).where(TariffVersion.tariff_id == tariff_id, TariffVersion.effective_from <= at)
        .order_by(TariffVersion.effective_from.desc()).limit(1)
    ).scalar()
    if version is None:
        raise NotFound(_l("price plan %(tariff_id)s has no version in force at %(isoformat)s; add one",
                          tariff_id=tariff_id, isoformat=at.isoformat()))
    return version
