"""What the portal shows for one account: balance and status, relays, alarms, usage series, charges,
top-ups with receipts, bills and messages (all read through the app session under RLS)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select, text
from sqlalchemy.orm import Session, joinedload

from ..devices.models import Meter
from ..ledger.models import Transfer
from ..ledger.post import balance_of
from ..modules.prepaid.models import LEVELS, MeterState, PrepaidAccount
from ..tenants.models import Floor, Property, Room
from ..timeseries import query as ts_query

MONEY_KINDS = ("topup", "refund", "reversal")


@dataclass
class Summary:
    account: PrepaidAccount
    room: Room | None
    balance: Decimal
    status: str  # opened | alarm1 | alarm2 | arrears | preset | closed
    meters: list[Meter]
    alarms: list[Any] = field(default_factory=list)
    charges: list[Any] = field(default_factory=list)  # per day and utility (daily_charges)
    topups: list[Transfer] = field(default_factory=list)
    messages: list[Any] = field(default_factory=list)
    bills: list[Any] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)  # today, month, unit (see usage_totals)
    days_left: Any = None  # prepaid forecast_store.DaysLeft of an open account


def status_of(account: PrepaidAccount) -> str:
    if account.status != "open":
        return account.status
    return "opened" if account.alarm_level == 0 else LEVELS[account.alarm_level]


def account_meters(session: Session, account: PrepaidAccount) -> list[Meter]:
    return list(session.execute(select(Meter).join(MeterState, MeterState.meter_id == Meter.id)
                                .where(MeterState.account_id == account.id, MeterState.active)
                                .order_by(Meter.id)).scalars())


def summary(session: Session, account: PrepaidAccount, full: bool = True, figures: Any = None) -> Summary:
    """The account page's data (``full`` False: balance, status and meters only, for the room pay page).
    ``figures``: the balance and stored forecast when read with the account (prepaid ``account_page.Figures``)."""
    meters = account_meters(session, account)
    room = session.get(Room, account.room_id, options=[joinedload(Room.floor).joinedload(Floor.building)]) \
        if account.room_id else None  # the page names it by building and number: one query, not three
    balance = figures.balance if figures is not None else balance_of(session, account.wallet_account_id)
    result = Summary(account, room, balance, status_of(account), meters)
    if not full:
        return result
    meter_ids = [m.id for m in meters] or [-1]
    try:
        from ..alarms.models import Alarm, PortalMessage

        result.alarms = list(session.execute(select(Alarm).where(
            or_(Alarm.account_id == account.id, Alarm.meter_id.in_(meter_ids)), Alarm.state != "cleared")
            .order_by(Alarm.raised_at.desc()).limit(20)).scalars())
        result.messages = list(session.execute(select(PortalMessage).where(PortalMessage.account_id == account.id)
                                               .order_by(PortalMessage.id.desc()).limit(20)).scalars())
    except ImportError:  # the alarms module is not installed
        pass
    result.charges = daily_charges(session, account)
    result.topups = list(session.execute(select(Transfer).where(
        Transfer.wallet_account_id == account.wallet_account_id, Transfer.kind.in_(MONEY_KINDS))
        .order_by(Transfer.id.desc()).limit(20)).scalars())
    result.bills = bills(session, account)
    result.usage = usage_totals(session, account, meters)
    if account.status == "open":
        from ..modules.prepaid.forecast_store import current

        result.days_left = current(session, account.id, result.balance, account.overdraft_limit) if figures is None \
            else current(session, account.id, result.balance, account.overdraft_limit, stored=figures.forecast)
    return result


def bills(session: Session, account: PrepaidAccount) -> list[Any]:
    """Post-paid bills issued to the account (none when the post-paid module is absent)."""
    try:
        from ..modules.postpaid.models import Bill
    except ImportError:
        return []
    return list(session.execute(select(Bill).where(Bill.account_id == account.id,
                                                   Bill.status.not_in(("draft", "void")))
                                .order_by(Bill.period_start.desc()).limit(24)).scalars())


#: A day of charges as the tenant reads it: local day, utility, usage and money (sums of that day's intervals).
DAILY_CHARGES_SQL = """
SELECT (c.interval_end AT TIME ZONE :tz)::date AS day, m.utility, sum(c.usage) AS usage, sum(c.amount) AS amount
FROM prepaid_charges c JOIN meters m ON m.id = c.meter_id
WHERE c.account_id = :a AND c.interval_end >= :since AND (c.usage <> 0 OR c.amount <> 0)
GROUP BY 1, 2 ORDER BY 1 DESC, 2
"""


def daily_charges(session: Session, account: PrepaidAccount, days: int = 14, now: datetime | None = None) -> list[Any]:
    """Charges per local day and utility over the last ``days`` days, newest first.

    The charging run books one row per reading interval (a minute in the demo); a tenant reads days. Intervals
    with nothing used and nothing charged (the baseline interval an account opens with, a night with the power
    off) stay in the ledger's interval chain but add nothing here."""
    prop = session.get(Property, account.property_id)
    tz = prop.timezone if prop else "Asia/Shanghai"
    now = (now or datetime.now(ZoneInfo(tz))).astimezone(ZoneInfo(tz))
    since = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return list(session.execute(text(DAILY_CHARGES_SQL), {"tz": tz, "a": account.id, "since": since}))


def usage_totals(session: Session, account: PrepaidAccount, meters: list[Meter] | None = None,
                 now: datetime | None = None) -> dict[str, Any]:
    """What the account's meters used today and this month (local days of the property), in kWh or m³."""
    prop = session.get(Property, account.property_id)
    tz = ZoneInfo(prop.timezone if prop else "Asia/Shanghai")
    now = (now or datetime.now(tz)).astimezone(tz)
    meters = account_meters(session, account) if meters is None else meters
    unit = "m³" if meters and all(m.utility == "water" for m in meters) else "kWh"
    column = "water_m3" if unit == "m³" else "energy_kwh"
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    today, month = Decimal(0), Decimal(0)
    # the series' bucket starts are Unix seconds: their local day is known here, without asking the database
    for series in ts_query.usage_series(session, [m.id for m in meters], month_start, now + timedelta(days=1), "day",
                                        columns=(column,)):
        for epoch, value in zip(series.buckets, series.values[column]):
            value = value or Decimal(0)
            month += value
            if datetime.fromtimestamp(epoch, tz).date() == now.date():
                today += value
    return {"today": today, "month": month, "unit": unit}


def usage_series(session: Session, account: PrepaidAccount, bucket: str, now: datetime | None = None) -> dict[str, Any]:
    """Usage per day (last 31 days) or per month (last 12 months) summed over the account's meters."""
    prop = session.get(Property, account.property_id)
    tz = ZoneInfo(prop.timezone if prop else "Asia/Shanghai")
    now = (now or datetime.now(tz)).astimezone(tz)
    if bucket == "month":
        start = (now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) - timedelta(days=335)).replace(day=1)
    else:
        bucket, start = "day", (now - timedelta(days=30)).replace(hour=0, minute=0, second=0, microsecond=0)
    meters = account_meters(session, account)
    totals: dict[str, Decimal] = {}
    unit = "m³" if meters and all(m.utility == "water" for m in meters) else "kWh"
    for row in ts_query.usage(session, [m.id for m in meters], start, now + timedelta(days=1), bucket):
        label = row.bucket.astimezone(tz).strftime("%Y-%m" if bucket == "month" else "%m-%d")
        value = row.water_m3 if unit == "m³" else row.energy_kwh
        totals[label] = totals.get(label, Decimal(0)) + (value or Decimal(0))
    return {"bucket": bucket, "unit": unit, "labels": list(totals), "values": [float(v) for v in totals.values()]}
