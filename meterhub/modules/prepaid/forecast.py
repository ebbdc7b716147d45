"""Days of money left: when an account's balance reaches its trip line, from its meters' recent daily usage.

Pure functions (no database): :mod:`forecast_store` gathers the inputs and keeps the results.

* Expected usage of a day: the mean of the same weekday over the history (``HISTORY_DAYS`` complete local
  days) when at least ``MIN_SAME_WEEKDAY`` such days are known, else the mean of every known day; with fewer
  than ``MIN_DAYS`` known days there is not enough usage to say.
* The projection starts now: the rest of today (its remaining share of the day's expected usage), then whole
  local days, each priced with :func:`meterhub.tariffs.pricing.price_interval` under the plan version in force
  that day, the tier position carried forward (reset at the start of each tier period).
* The money to spend is the balance down to the trip line (balance + overdraft limit). The cost curve is kept
  (``cum_cost[k]``: expected cost from the start to the end of slice ``k``), so the days left for another
  balance, later, are read from it without pricing again (:func:`days_left_on_curve`; the same lookup in SQL
  is ``meterhub_days_left``, migration 0021).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from ...ledger.money import round_sub_cent
from ...tariffs.pricing import TIER_KINDS, PlanVersion, price_interval, tier_period_start

HISTORY_DAYS = 28
MIN_DAYS = 3
MIN_SAME_WEEKDAY = 2
HORIZON_DAYS = 60
ZERO = Decimal(0)
DAY = timedelta(days=1)
#: status: ok (runs out within the horizon), arrears (at or below the trip line now), no_usage (not enough
#: usage yet), beyond (lasts longer than the horizon), no_price (usage but no price plan in force).
STATUSES = ("ok", "arrears", "no_usage", "beyond", "no_price")


@dataclass(frozen=True)
class MeterOutlook:
    """One meter's inputs: usage per complete local day, its plan versions (effective from, version; ascending)
    and its usage so far in the current tier period."""

    daily_usage: Mapping[date, Decimal]
    plans: Sequence[tuple[datetime, PlanVersion]]
    period_usage: Decimal = ZERO


@dataclass(frozen=True)
class Forecast:
    """When the money runs out: ``days_left`` from ``at`` (2 decimals), ``runs_out_at``, and the cost curve."""

    status: str
    at: datetime
    days_left: Decimal | None
    runs_out_at: datetime | None
    first_fraction: Decimal  # length of the first slice (rest of today) in days
    cum_cost: tuple[Decimal, ...]  # cum_cost[0] = 0; cum_cost[k] = expected cost to the end of slice k
    daily_cost: Decimal | None  # mean expected cost per whole day over the first week

    @property
    def whole_days(self) -> int | None:
        """Days left rounded down (what the portal says: "about N days left")."""
        return None if self.days_left is None else int(self.days_left)


def expected_usage(daily: Mapping[date, Decimal], day: date) -> Decimal | None:
    """The usage expected on ``day`` (same-weekday mean, else the mean of all known days); None when too few."""
    if len(daily) < MIN_DAYS:
        return None
    same = [v for d, v in daily.items() if d.weekday() == day.weekday()]
    values = same if len(same) >= MIN_SAME_WEEKDAY else list(daily.values())
    return sum(values, ZERO) / len(values)


def weekday_means(daily: Mapping[date, Decimal]) -> list[Decimal] | None:
    """:func:`expected_usage` for each weekday (0 = Monday), computed once per meter."""
    if len(daily) < MIN_DAYS:
        return None
    everything = sum(daily.values(), ZERO) / len(daily)
    out = []
    for weekday in range(7):
        same = [v for d, v in daily.items() if d.weekday() == weekday]
        out.append(sum(same, ZERO) / len(same) if len(same) >= MIN_SAME_WEEKDAY else everything)
    return out


def history_window(at: datetime, tz: str) -> tuple[date, date]:
    """The complete local days the history is read from: [first, last] (today is not complete)."""
    today = at.astimezone(ZoneInfo(tz)).date()
    return today - timedelta(days=HISTORY_DAYS), today - DAY


def _plan_at(plans: Sequence[tuple[datetime, PlanVersion]], t: datetime) -> PlanVersion | None:
    found = None
    for effective_from, version in plans:
        if effective_from <= t:
            found = version
    return found


def _slices(at: datetime, tz: str) -> list[tuple[datetime, datetime, date, Decimal]]:
    """(start, end, local day, share of that day's usage) from ``at`` over the horizon, split at local midnights."""
    zone = ZoneInfo(tz)
    local = at.astimezone(zone)
    day = local.date()
    out = []
    start = at
    for _ in range(HORIZON_DAYS + 1):
        day_start = datetime.combine(day, datetime.min.time(), zone)
        day_end = datetime.combine(day + DAY, datetime.min.time(), zone)
        share = Decimal((day_end - start).total_seconds()) / Decimal((day_end - day_start).total_seconds())
        if share > 0:
            out.append((start, day_end, day, share))
        start, day = day_end, day + DAY
    return out


def project(balance: Decimal, overdraft_limit: Decimal, meters: Sequence[MeterOutlook], at: datetime,
            tz: str) -> Forecast:
    """Project the account's spending from ``at`` and say when ``balance`` reaches the trip line."""
    available = balance + overdraft_limit
    slices = _slices(at, tz)
    first_fraction = slices[0][3]
    if available <= 0:
        return Forecast("arrears", at, ZERO, at, first_fraction, (ZERO,), None)
    known = [m for m in meters if len(m.daily_usage) >= MIN_DAYS]
    if not known:
        return Forecast("no_usage", at, None, None, first_fraction, (ZERO,), None)
    cum, total, used_any, priced_any = [ZERO], ZERO, False, False
    tier_use = [m.period_usage for m in known]
    tier_start: list[date | None] = [None] * len(known)
    means = [weekday_means(m.daily_usage) for m in known]
    for t0, t1, day, share in slices:
        for i, meter in enumerate(known):
            usage = means[i][day.weekday()]  # type: ignore[index]
            plan = _plan_at(meter.plans, t0)
            used_any = used_any or bool(usage)
            if not usage or plan is None:
                continue
            priced_any = True
            if plan.kind in TIER_KINDS:
                period = tier_period_start(t0, tz, plan.tier_period)
                if tier_start[i] is not None and period != tier_start[i]:
                    tier_use[i] = ZERO  # a new month (or year): tiers count again from zero
                tier_start[i] = period
            usage = usage * share
            if plan.kind == "flat":  # what price_interval answers for a flat plan, without its general path
                total += round_sub_cent(usage * plan.prices["flat"])
            else:
                total += price_interval(plan, t0, t1, tz, usage, cum_before=tier_use[i]).cost
            tier_use[i] += usage
        cum.append(total)
    curve = tuple(cum)
    week = curve[min(8, len(curve) - 1)] - curve[1] if len(curve) > 2 else ZERO
    daily = (week / (min(8, len(curve) - 1) - 1)).quantize(Decimal("0.01"), ROUND_HALF_UP) if len(curve) > 2 else None
    if total == 0:
        return Forecast("no_price" if used_any and not priced_any else "beyond", at, None, None, first_fraction,
                        curve, daily)
    days = days_left_on_curve(curve, first_fraction, ZERO, available)
    if days is None:
        return Forecast("beyond", at, None, None, first_fraction, curve, daily)
    return Forecast("ok", at, days, at + timedelta(days=float(days)), first_fraction, curve, daily)


def _position(k: int, first_fraction: Decimal) -> Decimal:
    """Days from the start to the end of slice ``k`` (slice 0 is the start itself)."""
    return ZERO if k == 0 else first_fraction + (k - 1)


def _cost_at(curve: Sequence[Decimal], first_fraction: Decimal, days: Decimal) -> Decimal:
    """Expected cost from the start to ``days`` later (linear within a slice)."""
    for k in range(1, len(curve)):
        lo, hi = _position(k - 1, first_fraction), _position(k, first_fraction)
        if days <= hi:
            return curve[k - 1] + (curve[k] - curve[k - 1]) * (days - lo) / (hi - lo)
    return curve[-1]


def days_left_on_curve(curve: Sequence[Decimal], first_fraction: Decimal, elapsed: Decimal,
                       available: Decimal) -> Decimal | None:
    """Days from ``elapsed`` days after the curve's start until ``available`` money is spent (2 decimals);
    0 when nothing is available, None when it lasts past the curve's end."""
    if available <= 0:
        return ZERO
    target = _cost_at(curve, first_fraction, elapsed) + available
    for k in range(1, len(curve)):
        if curve[k] >= target and curve[k] > curve[k - 1]:
            lo, hi = _position(k - 1, first_fraction), _position(k, first_fraction)
            x = lo + (hi - lo) * (target - curve[k - 1]) / (curve[k] - curve[k - 1])
            return max(ZERO, x - elapsed).quantize(Decimal("0.01"), ROUND_HALF_UP)
    return None
