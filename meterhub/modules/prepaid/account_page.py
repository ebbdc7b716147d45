"""What the console's room / account page shows beside the account itself: where it is (by name), its open
alarms, what its meters can switch, usage today and this month, and days of money left."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from ...devices.models import Device, Meter
from ...ledger.models import LedgerBalance
from ...ledger.post import ZERO
from ...names import SubjectName, subject_names
from ...tenants.models import Property
from .models import PrepaidAccount, PrepaidForecast

#: capabilities that mean the platform can switch the meter (electricity relay, water valve)
SWITCHES = ("relay", "valve")


@dataclass(frozen=True)
class Figures:
    """An account's balance and stored days-left forecast, read with the account (:func:`with_figures`)."""

    balance: Decimal
    forecast: PrepaidForecast | None


def with_figures(stmt: Select) -> Select:
    """``stmt``, a select of a :class:`PrepaidAccount` (and whatever else), plus the account's property (it stays in
    the session: the page's time zone), balance and stored forecast: lookups the account and portal pages made one
    statement each. Read a row's last two columns with :func:`figures_of`."""
    return (stmt.add_columns(Property, LedgerBalance.balance, PrepaidForecast)
            .join(Property, Property.id == PrepaidAccount.property_id)
            .outerjoin(LedgerBalance, LedgerBalance.account_id == PrepaidAccount.wallet_account_id)
            .outerjoin(PrepaidForecast, PrepaidForecast.account_id == PrepaidAccount.id))


def figures_of(row: Any) -> Figures:  # noqa: ANN401
    """The figures of a row of :func:`with_figures` (a balance of an account without entries is 0, as
    ``ledger.post.balance_of`` says)."""
    return Figures(row[-2] if row[-2] is not None else ZERO, row[-1])


@dataclass(frozen=True)
class MeterSwitch:
    """What the page says about a meter's switch: ``kind`` relay | valve | none, and its state now."""

    kind: str
    state: str  # on | off | unknown | none


def meter_switches(session: Session, meters: list[Meter],
                   devices: dict[int, Device] | None = None) -> dict[int, MeterSwitch]:
    """Per meter: whether its device has a relay (or valve) the platform can switch, and where it stands
    (``devices`` by id when the caller read them with the meters)."""
    from ...plugins import driver_registry

    if devices is None:
        devices = {d.id: d for d in session.execute(select(Device).where(
            Device.id.in_([m.device_id for m in meters] or [-1]))).scalars()}
    try:
        drivers = driver_registry()
    except Exception:  # noqa: BLE001 - no plugins in this process: nothing is known to switch
        drivers = {}
    out = {}
    for meter in meters:
        device = devices.get(meter.device_id)
        driver = drivers.get(device.driver_key) if device is not None else None
        caps = driver.capabilities_for(device.config) if driver is not None else frozenset()
        kind = next((k for k in SWITCHES if k in caps), "none")
        if kind == "none":
            out[meter.id] = MeterSwitch("none", "none")
        else:
            out[meter.id] = MeterSwitch(kind, {True: "on", False: "off", None: "unknown"}[meter.relay_closed])
    return out


def open_alarms(session: Session, acc: PrepaidAccount, meter_ids: list[int]) -> list[Any]:
    """The account's and its meters' open alarms, newest first."""
    from ...alarms.models import Alarm

    return list(session.execute(select(Alarm).where(
        or_(Alarm.account_id == acc.id, Alarm.meter_id.in_(meter_ids or [-1])), Alarm.state != "cleared")
        .order_by(Alarm.raised_at.desc()).limit(20)).scalars())


def context(session: Session, acc: PrepaidAccount, meters: list[Meter], figures: Figures,
            devices: dict[int, Device] | None = None) -> dict[str, Any]:
    """Template values of the account page (``name``, ``switches``, ``alarms``, ``usage``, ``days``,
    ``meter_names``)."""
    from ...portal.dashboard import usage_totals
    from .forecast_store import current

    name: SubjectName | None = subject_names(session, acc.group_id, [("account", acc.id)]).get(("account", acc.id))
    days = current(session, acc.id, figures.balance, acc.overdraft_limit, stored=figures.forecast) \
        if acc.status == "open" else None
    return {"name": name, "switches": meter_switches(session, meters, devices), "alarms": open_alarms(session, acc,
            [m.id for m in meters]), "usage": usage_totals(session, acc, meters), "days": days,
            "meter_names": {m.id: m.name or f"#{m.channel}" for m in meters}}
