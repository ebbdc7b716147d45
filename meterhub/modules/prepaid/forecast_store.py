"""Days of money left for many accounts: gather the inputs set-based, project (:mod:`.forecast`), keep the result.

:func:`compute` projects the open accounts named (or all) from their meters' daily usage (the usage rollups,
``HISTORY_DAYS`` complete local days), the plan of each meter (most specific assignment wins, as charging) and
the usage so far in its tier period. :func:`refresh_job` stores every open account's forecast in
``prepaid_forecasts`` and re-evaluates alarm levels (a level may be set in days: ``alarm1_days``). Readers take
the days left for the balance of now from the stored curve: :func:`days_left_now` in Python, SQL
``meterhub_days_left`` (:data:`DAYS_LEFT_SQL`) in set-based queries.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import select, text
from sqlalchemy.orm import Session, selectinload

from ...models import utcnow
from ...tariffs.models import TariffVersion
from ...tariffs.pricing import TIER_KINDS, PlanVersion, tier_period_start
from ...tariffs.service import as_plan
from ...timeseries.query import usage_series
from .forecast import Forecast, MeterOutlook, days_left_on_curve, history_window, project
from .models import PrepaidForecast

log = logging.getLogger(__name__)
CHUNK = 2000
#: A stored forecast older than this is not used (the job runs every few minutes).
STALE = timedelta(days=2)
#: Days left now for the stored forecast ``f`` of account ``a`` with wallet balance ``b`` (SQL expression).
DAYS_LEFT_SQL = ("meterhub_days_left(f.cum_cost, f.first_fraction, "
                 "CAST(extract(epoch FROM now() - f.computed_at) / 86400 AS numeric), "
                 "coalesce(b.balance, 0) + a.overdraft_limit)")
#: The stored estimate less the days gone since (SQL, cheap: for sorting and for narrowing before
#: ``DAYS_LEFT_SQL``, a plpgsql call per row). Right as long as the balance went as forecast: a money movement
#: refreshes its account's forecast at once (:func:`request_refresh`), the job every account every 10 minutes.
ESTIMATE_SQL = ("CASE WHEN f.status = 'ok' THEN f.days_left - "
                "CAST(extract(epoch FROM now() - f.computed_at) / 86400 AS numeric) END")
REFRESH_REQUESTED = "meterhub.modules.prepaid.forecast_store:refresh_requested"

INPUTS_SQL = """
SELECT a.id AS account_id, a.group_id, a.property_id, p.timezone AS tz, coalesce(b.balance, 0) AS balance,
       a.overdraft_limit, s.meter_id, s.utility, s.period_start, s.period_usage,
       coalesce(am.tariff_id, ar.tariff_id, ab.tariff_id, ap.tariff_id) AS tariff_id  -- most specific wins
FROM prepaid_accounts a
JOIN properties p ON p.id = a.property_id
LEFT JOIN ledger_balances b ON b.account_id = a.wallet_account_id
LEFT JOIN prepaid_meter_state s ON s.account_id = a.id AND s.active
LEFT JOIN meters m ON m.id = s.meter_id
LEFT JOIN rooms r ON r.id = m.room_id
LEFT JOIN tariff_assignments am ON am.scope = 'meter' AND am.scope_id = s.meter_id AND am.utility = s.utility
     AND am.group_id = a.group_id
LEFT JOIN tariff_assignments ar ON ar.scope = 'room' AND ar.scope_id = m.room_id AND ar.utility = s.utility
     AND ar.group_id = a.group_id
LEFT JOIN tariff_assignments ab ON ab.scope = 'building' AND ab.scope_id = r.building_id AND ab.utility = s.utility
     AND ab.group_id = a.group_id
LEFT JOIN tariff_assignments ap ON ap.scope = 'property' AND ap.scope_id = a.property_id AND ap.utility = s.utility
     AND ap.group_id = a.group_id
WHERE a.status = 'open' AND (CAST(:ids AS bigint[]) IS NULL OR a.id = ANY(CAST(:ids AS bigint[])))
ORDER BY a.id
"""


def _plans(session: Session, tariff_ids: set[int]) -> dict[int, list[tuple[datetime, PlanVersion]]]:
    versions = session.execute(
        select(TariffVersion).where(TariffVersion.tariff_id.in_(tariff_ids or {-1}))
        .options(selectinload(TariffVersion.periods), selectinload(TariffVersion.tiers))
        .order_by(TariffVersion.tariff_id, TariffVersion.effective_from)).scalars().all()
    out: dict[int, list[tuple[datetime, PlanVersion]]] = defaultdict(list)
    for v in versions:
        out[v.tariff_id].append((v.effective_from, as_plan(v)))
    return out


def _daily_usage(session: Session, meters: dict[int, str], tz_of: dict[int, str],
                 at: datetime) -> dict[int, dict[date, Decimal]]:
    """Complete local days of usage of each meter (kWh or m³) over the history window."""
    out: dict[int, dict[date, Decimal]] = {}
    by_zone: dict[str, list[int]] = defaultdict(list)
    for meter_id in meters:
        by_zone[tz_of[meter_id]].append(meter_id)
    for tz, ids in by_zone.items():
        zone = ZoneInfo(tz)
        first, last = history_window(at, tz)
        start = datetime.combine(first, datetime.min.time(), zone)
        end = datetime.combine(last + timedelta(days=1), datetime.min.time(), zone)
        for i in range(0, len(ids), CHUNK):
            for s in usage_series(session, ids[i:i + CHUNK], start, end, "day", ("energy_kwh", "water_m3")):
                column = "water_m3" if meters[s.meter_id] == "water" else "energy_kwh"
                out[s.meter_id] = {datetime.fromtimestamp(epoch, zone).date(): value
                                   for epoch, value in zip(s.buckets, s.values[column]) if value is not None}
    return out


def _period_usage(plans: Sequence[tuple[datetime, PlanVersion]], period_start: date | None, usage: Decimal,
                  at: datetime, tz: str) -> Decimal:
    """Usage so far in the tier period in force now (the meter's running total counts only if it is that one)."""
    current = next((v for eff, v in reversed(plans) if eff <= at), None)
    if current is None or current.kind not in TIER_KINDS or period_start is None:
        return Decimal(0)
    return usage if period_start == tier_period_start(at, tz, current.tier_period) else Decimal(0)


def compute(session: Session, account_ids: Sequence[int] | None = None,
            at: datetime | None = None) -> dict[int, tuple[dict, Forecast]]:
    """Forecasts of the open accounts (all, or ``account_ids``): {account id: (account facts, forecast)}."""
    at = at or utcnow()
    rows = session.execute(text(INPUTS_SQL), {"ids": list(account_ids) if account_ids is not None else None}).all()
    meters = {r.meter_id: r.utility for r in rows if r.meter_id is not None}
    tz_of = {r.meter_id: r.tz for r in rows if r.meter_id is not None}
    plans = _plans(session, {r.tariff_id for r in rows if r.tariff_id is not None})
    usage = _daily_usage(session, meters, tz_of, at)
    accounts: dict[int, dict] = {}
    outlooks: dict[int, list[MeterOutlook]] = defaultdict(list)
    for r in rows:
        accounts.setdefault(r.account_id, {"group_id": r.group_id, "property_id": r.property_id, "tz": r.tz,
                                           "balance": r.balance, "overdraft_limit": r.overdraft_limit})
        if r.meter_id is None:
            continue
        meter_plans = plans.get(r.tariff_id, []) if r.tariff_id is not None else []
        outlooks[r.account_id].append(MeterOutlook(
            usage.get(r.meter_id, {}), meter_plans,
            _period_usage(meter_plans, r.period_start, r.period_usage or Decimal(0), at, r.tz)))
    return {aid: (facts, project(facts["balance"], facts["overdraft_limit"], outlooks.get(aid, []), at, facts["tz"]))
            for aid, facts in accounts.items()}


def store(session: Session, results: dict[int, tuple[dict, Forecast]]) -> int:
    """Keep the forecasts (one row per account, replaced)."""
    if not results:
        return 0
    session.execute(text(
        "INSERT INTO prepaid_forecasts (account_id, group_id, property_id, computed_at, status, balance, days_left, "
        "first_fraction, cum_cost, daily_cost) VALUES (:a, :g, :p, :at, :s, :b, :d, :ff, :cum, :daily) "
        "ON CONFLICT (account_id) DO UPDATE SET computed_at = excluded.computed_at, status = excluded.status, "
        "balance = excluded.balance, days_left = excluded.days_left, first_fraction = excluded.first_fraction, "
        "cum_cost = excluded.cum_cost, daily_cost = excluded.daily_cost, property_id = excluded.property_id"),
        [{"a": aid, "g": facts["group_id"], "p": facts["property_id"], "at": fc.at, "s": fc.status,
          "b": facts["balance"], "d": fc.days_left, "ff": fc.first_fraction, "cum": list(fc.cum_cost),
          "daily": fc.daily_cost} for aid, (facts, fc) in results.items()])
    return len(results)


def refresh(session: Session, account_ids: Sequence[int] | None = None, at: datetime | None = None) -> int:
    """Compute and store forecasts, then re-evaluate the alarm levels of accounts with levels in days."""
    from .control import evaluate_accounts

    done = 0
    ids = list(account_ids) if account_ids is not None else [
        r[0] for r in session.execute(text("SELECT id FROM prepaid_accounts WHERE status = 'open' ORDER BY id"))]
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i:i + CHUNK]
        done += store(session, compute(session, chunk, at))
        in_days = [r[0] for r in session.execute(text(
            "SELECT id FROM prepaid_accounts WHERE id = ANY(CAST(:ids AS bigint[])) "
            "AND (alarm1_days IS NOT NULL OR alarm2_days IS NOT NULL)"), {"ids": chunk})]
        evaluate_accounts(session, in_days, actor="forecast")
    return done


def request_refresh(account_ids: Sequence[int]) -> None:
    """A money movement of these accounts was committed: refresh their forecasts soon (one coalesced job)."""
    from ... import soon

    soon.request(REFRESH_REQUESTED, items=account_ids)


def refresh_requested() -> int:
    """Event job: refresh the forecasts of the accounts requested since the last run."""
    from ... import soon
    from ...db import service_session

    account_ids = soon.take(REFRESH_REQUESTED)
    if not account_ids:
        return 0
    with service_session() as session:
        return refresh(session, account_ids)


def days_left_now(stored: PrepaidForecast, balance: Decimal, overdraft_limit: Decimal,
                  now: datetime | None = None) -> Decimal | None:
    """Days left for ``balance`` now, read from a stored forecast (as SQL ``meterhub_days_left``)."""
    now = now or utcnow()
    elapsed = Decimal((now - stored.computed_at).total_seconds()) / Decimal(86400)
    return days_left_on_curve(stored.cum_cost, stored.first_fraction, max(elapsed, Decimal(0)),
                              balance + overdraft_limit)


def refresh_job() -> int:
    """Periodic job: every open account's forecast (registered by the prepaid module)."""
    from ...db import service_session

    with service_session() as session:
        done = refresh(session)
    log.info("forecasts: %d accounts", done)
    return done


@dataclass(frozen=True)
class DaysLeft:
    """What a page shows: status (as :data:`forecast.STATUSES`), days left now, when, cost per day."""

    status: str
    days: Decimal | None
    runs_out_at: datetime | None
    daily_cost: Decimal | None

    @property
    def whole_days(self) -> int | None:
        return None if self.days is None else int(self.days)


_READ = object()  # ``current``'s ``stored`` not given: read it


def current(session: Session, account_id: int, balance: Decimal, overdraft_limit: Decimal,
            now: datetime | None = None, *, stored: PrepaidForecast | None | object = _READ) -> DaysLeft:
    """Days left of one account now: from its stored forecast when fresh, else projected on the spot. ``stored``:
    the account's stored forecast (None: it has none) when the caller read it already."""
    now = now or utcnow()
    if stored is _READ:
        stored = session.get(PrepaidForecast, account_id)
    assert stored is None or isinstance(stored, PrepaidForecast)
    if stored is None or now - stored.computed_at > STALE:
        result = compute(session, [account_id], now).get(account_id)
        if result is None:
            return DaysLeft("no_usage", None, None, None)
        fc = result[1]
        return DaysLeft(fc.status, fc.days_left, fc.runs_out_at, fc.daily_cost)
    if balance + overdraft_limit <= 0:
        return DaysLeft("arrears", Decimal(0), now, stored.daily_cost)
    if stored.status in ("no_usage", "no_price"):
        return DaysLeft(stored.status, None, None, stored.daily_cost)
    days = days_left_now(stored, balance, overdraft_limit, now)
    if days is None:
        return DaysLeft("beyond", None, None, stored.daily_cost)
    return DaysLeft("ok", days, now + timedelta(days=float(days)), stored.daily_cost)
