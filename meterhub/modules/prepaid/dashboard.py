"""Dashboard figures for the properties in an operator's scope: money in, usage, levels, alarms, offline, trends.

Built for 100,000 meters: usage from the per-property daily rollup (:mod:`meterhub.timeseries.property_usage`),
money from the ledger's top-ups through a partial index on their time, levels and offline counts through
partial indexes, days left from the stored forecasts. Every query runs in the caller's session (RLS: the
transaction's group) and is limited to ``property_ids``. Days are each property's local days.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.orm import Session

from ...models import utcnow
from .forecast_store import DAYS_LEFT_SQL, ESTIMATE_SQL

ZERO = Decimal(0)
TREND_DAYS = 30
SOON_DAYS = 3
UTILITIES = ("electricity", "water")
COUNTER_CHANNELS = ("cash", "card", "transfer")


@dataclass
class PropertyFigures:
    """The figures of one property (the group dashboard lists them; their sum is the group's)."""

    id: int
    name: str
    timezone: str
    today: date
    money_today: dict[str, Decimal] = field(default_factory=lambda: {"counter": ZERO, "online": ZERO})
    money_month: dict[str, Decimal] = field(default_factory=lambda: {"counter": ZERO, "online": ZERO})
    usage: dict[str, dict[str, Decimal]] = field(default_factory=dict)  # utility → today/yesterday/month/last_month
    levels: dict[int, int] = field(default_factory=lambda: {1: 0, 2: 0, 3: 0})
    running_out: int = 0
    offline_meters: int = 0
    offline_gateways: int = 0


@dataclass
class Dashboard:
    """Figures of the properties in scope, their totals, and the lists behind the panels."""

    properties: list[PropertyFigures]
    totals: PropertyFigures
    alarms_by_kind: dict[str, int]
    trend_days: list[date]
    trend_usage: dict[str, list[Decimal]]
    trend_money: list[Decimal]
    top_consumers: list[Any]
    running_out: list[Any]
    latest_topups: list[Any]
    latest_commands: list[Any]


def _ids(property_ids: list[int] | None) -> list[int] | None:
    return None if property_ids is None else [int(i) for i in property_ids] or [-1]


SCOPE = "(CAST(:props AS bigint[]) IS NULL OR {col} = ANY(CAST(:props AS bigint[])))"


def _scoped(col: str) -> str:
    return SCOPE.format(col=col)


def _empty_usage() -> dict[str, Decimal]:
    return {"today": ZERO, "yesterday": ZERO, "month": ZERO, "last_month": ZERO}


def _month_before(day: date) -> date:
    return (day.replace(day=1) - timedelta(days=1)).replace(day=1)


def _money(session: Session, figures: dict[int, PropertyFigures], params: dict) -> dict[date, Decimal]:
    """Top-ups less their reversals today and this month, at the counter and online, and per day (one pass over
    the last 32 days' top-ups through their partial index on time)."""
    rows = session.execute(text(
        "SELECT a.property_id, (t.created_at AT TIME ZONE p.timezone)::date AS day, t.channel = 'online', "
        "sum(t.amount) FROM ledger_transfers t JOIN prepaid_accounts a ON a.wallet_account_id = t.wallet_account_id "
        "JOIN properties p ON p.id = a.property_id "
        "WHERE t.kind IN ('topup', 'reversal') AND t.created_at >= now() - interval '32 days' "
        f"AND {_scoped('a.property_id')} GROUP BY 1, 2, 3"), params).all()
    by_day: dict[date, Decimal] = defaultdict(lambda: ZERO)
    for prop_id, day, online, amount in rows:
        fig, key = figures[prop_id], "online" if online else "counter"
        if day == fig.today:
            fig.money_today[key] += amount
        if day >= fig.today.replace(day=1):
            fig.money_month[key] += amount
        by_day[day] += amount
    return by_day


def _usage(session: Session, figures: dict[int, PropertyFigures], params: dict) -> tuple[list[date], dict]:
    """Usage today / yesterday / this month / the same days of last month, and the 30-day trend."""
    earliest = min((f.today for f in figures.values()), default=utcnow().date())
    rows = session.execute(text(
        "SELECT property_id, utility, day, usage FROM usage_property_daily "
        f"WHERE {_scoped('property_id')} AND day >= :since"),
        {**params, "since": min(_month_before(earliest), earliest - timedelta(days=TREND_DAYS))}).all()
    latest = max((f.today for f in figures.values()), default=utcnow().date())
    days = [latest - timedelta(days=TREND_DAYS - 1 - i) for i in range(TREND_DAYS)]
    trend = {u: [ZERO] * TREND_DAYS for u in UTILITIES}
    for prop_id, utility, day, usage in rows:
        fig = figures[prop_id]
        u = fig.usage.setdefault(utility, _empty_usage())
        month_start, last_start = fig.today.replace(day=1), _month_before(fig.today)
        into_month = (fig.today - month_start).days
        if day == fig.today:
            u["today"] += usage
        if day == fig.today - timedelta(days=1):
            u["yesterday"] += usage
        if month_start <= day <= fig.today:
            u["month"] += usage
        if last_start <= day <= min(last_start + timedelta(days=into_month), month_start - timedelta(days=1)):
            u["last_month"] += usage
        offset = (day - days[0]).days
        if 0 <= offset < TREND_DAYS and utility in trend:
            trend[utility][offset] += usage
    return days, trend


def _counts(session: Session, figures: dict[int, PropertyFigures], params: dict) -> None:
    for prop_id, level, n in session.execute(text(
            "SELECT property_id, alarm_level, count(*) FROM prepaid_accounts WHERE status = 'open' "
            f"AND alarm_level > 0 AND {_scoped('property_id')} GROUP BY 1, 2"), params):
        figures[prop_id].levels[level] = n
    for prop_id, n in session.execute(text(
            f"SELECT property_id, count(*) FROM meters WHERE status = 'offline' AND {_scoped('property_id')} "
            "GROUP BY 1"), params):
        figures[prop_id].offline_meters = n
    for prop_id, n in session.execute(text(
            f"SELECT property_id, count(*) FROM gateways WHERE status = 'offline' AND {_scoped('property_id')} "
            "GROUP BY 1"), params):
        figures[prop_id].offline_gateways = n


RUNNING_OUT_SQL = f"""
WITH x AS MATERIALIZED (  -- each candidate's exact days left, computed once (a plpgsql call per row)
  SELECT a.id AS account_id, a.property_id, a.room_id, a.customer_name, b.balance, {DAYS_LEFT_SQL} AS days
  FROM prepaid_forecasts f
  JOIN prepaid_accounts a ON a.id = f.account_id AND a.status = 'open' AND a.alarm_level < 3
  LEFT JOIN ledger_balances b ON b.account_id = a.wallet_account_id
  WHERE f.status = 'ok' AND f.computed_at > now() - interval '2 days' AND f.days_left <= CAST(:within AS numeric) + 3
    AND {ESTIMATE_SQL} <= CAST(:within AS numeric) + 1 AND {_scoped('f.property_id')}
), soon AS MATERIALIZED (SELECT * FROM x WHERE x.days <= :within)
SELECT s.*, r.number AS room_number, NULL::bigint AS in_property  -- the soonest, with their rooms
FROM (SELECT * FROM soon ORDER BY soon.days, soon.account_id LIMIT :listed) s LEFT JOIN rooms r ON r.id = s.room_id
UNION ALL
SELECT NULL, property_id, NULL, NULL, NULL, NULL, NULL, count(*) FROM soon GROUP BY property_id  -- how many each
"""


def running_out(session: Session, property_ids: list[int] | None, within_days: int = SOON_DAYS,
                listed: int = 10) -> tuple[dict[int, int], list[Any]]:
    """Open accounts (not yet in arrears) whose money runs out within ``within_days``: how many per property, and
    the ``listed`` soonest (with their room's number). The exact days left of the moment for those whose stored
    estimate is within a day of it (index on the estimate); one statement, which names only the rooms it lists."""
    rows = session.execute(text(RUNNING_OUT_SQL), {"props": _ids(property_ids), "within": within_days,
                                                   "listed": listed}).all()
    listed_rows = sorted((row for row in rows if row.account_id is not None), key=lambda r: (r.days, r.account_id))
    return {row.property_id: row.in_property for row in rows if row.account_id is None}, listed_rows


def _lists(session: Session, params: dict) -> tuple[list, list, list]:
    top = session.execute(text(
        "SELECT t.property_id, t.utility, t.rank, t.usage, t.meter_id, m.name AS meter_name, m.room_id, "
        "r.number AS room_number, p.name AS property_name, a.id AS account_id, a.customer_name "
        "FROM usage_top_meters t JOIN properties p ON p.id = t.property_id JOIN meters m ON m.id = t.meter_id "
        "LEFT JOIN rooms r ON r.id = m.room_id "
        "LEFT JOIN prepaid_meter_state s ON s.meter_id = m.id AND s.active "
        "LEFT JOIN prepaid_accounts a ON a.id = s.account_id "
        "WHERE t.month = date_trunc('month', now() AT TIME ZONE p.timezone)::date "
        f"AND {_scoped('t.property_id')} ORDER BY t.usage DESC LIMIT 10"), params).all()
    topups = session.execute(text(
        "SELECT t.id AS transfer_id, t.amount, t.channel, t.created_at, t.actor, a.id AS account_id, "
        "a.customer_name, r.number AS room_number, p.name AS property_name, p.timezone "
        "FROM ledger_transfers t JOIN prepaid_accounts a ON a.wallet_account_id = t.wallet_account_id "
        "JOIN properties p ON p.id = a.property_id LEFT JOIN rooms r ON r.id = a.room_id "
        "WHERE t.kind = 'topup' AND t.created_at >= now() - interval '32 days' "
        f"AND {_scoped('a.property_id')} ORDER BY t.created_at DESC LIMIT 8"), params).all()
    commands = session.execute(text(
        "SELECT c.id, c.kind, c.state, c.created_at, c.params, c.meter_id, m.name AS meter_name, "
        "r.number AS room_number, p.name AS property_name, p.timezone "
        "FROM commands c JOIN meters m ON m.id = c.meter_id JOIN properties p ON p.id = m.property_id "
        f"LEFT JOIN rooms r ON r.id = m.room_id WHERE {_scoped('m.property_id')} "
        "ORDER BY c.id DESC LIMIT 8"), params).all()
    return top, topups, commands


def build(session: Session, property_ids: list[int] | None) -> Dashboard:
    """Every figure of the dashboard of ``property_ids`` (None: the whole group)."""
    params = {"props": _ids(property_ids)}
    session.execute(text("SET LOCAL jit = off"))  # short page queries: JIT compiling costs more than it saves
    now = utcnow()
    figures = {pid: PropertyFigures(pid, name, tz, now.astimezone(ZoneInfo(tz)).date())
               for pid, name, tz in session.execute(text(
                   f"SELECT id, name, timezone FROM properties WHERE {_scoped('id')} ORDER BY name"), params)}
    money_by_day = _money(session, figures, params)
    days, trend = _usage(session, figures, params)
    _counts(session, figures, params)
    counts, soon = running_out(session, property_ids)
    for prop_id, n in counts.items():
        figures[prop_id].running_out = n
    alarms = dict(session.execute(text(
        f"SELECT kind, count(*) FROM alarms WHERE state <> 'cleared' AND {_scoped('property_id')} "
        "GROUP BY kind ORDER BY count(*) DESC"), params).all())
    top, topups, commands = _lists(session, params)
    return Dashboard(list(figures.values()), _sum(list(figures.values()), now), alarms, days, trend,
                     [money_by_day.get(d, ZERO) for d in days], top, soon, topups, commands)


def _sum(props: list[PropertyFigures], now: datetime) -> PropertyFigures:
    total = PropertyFigures(0, "", "", props[0].today if props else now.date())
    for p in props:
        for key in ("counter", "online"):
            total.money_today[key] += p.money_today[key]
            total.money_month[key] += p.money_month[key]
        for utility, values in p.usage.items():
            acc = total.usage.setdefault(utility, _empty_usage())
            for k, v in values.items():
                acc[k] += v
        for level, n in p.levels.items():
            total.levels[level] += n
        total.running_out += p.running_out
        total.offline_meters += p.offline_meters
        total.offline_gateways += p.offline_gateways
    return total
