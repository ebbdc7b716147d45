"""Pure pricing functions: what one interval of usage costs under one plan version.

The set-based SQL in ``meterhub.modules.prepaid.charging`` implements exactly these rules; tests compare
both. Rules (docs/money.md):

* TOU: usage read from the meter's TOU registers is priced per rate. Without registers the interval's
  usage is spread evenly over its duration and split by the plan's periods of the property's local day.
* Tiers: ``lower`` thresholds of cumulative usage in the tier period (month or year, local time, the
  period that contains the interval's start); usage above a threshold adds that tier's surcharge, also
  when a threshold falls inside one interval.
* The interval cost is rounded half-up to 8 decimals; money is booked by ``money.booked_increment``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from ..errors import ValidationError
from ..ledger.money import USAGE_QUANTUM, round_sub_cent
from .models import RATES

ZERO = Decimal("0")
DAY_MINUTES = 1440
MAX_PERIODS = 48
TOU_KINDS = ("tou", "tiered_tou")
TIER_KINDS = ("tiered", "tiered_tou")


@dataclass(frozen=True)
class PlanVersion:
    """A plan version as plain data: prices per rate, day periods, tiers."""

    kind: str
    prices: Mapping[str, Decimal]
    periods: tuple[tuple[int, int, str], ...] = ((0, DAY_MINUTES, "flat"),)
    tiers: tuple[tuple[Decimal, Decimal], ...] = ()
    tier_period: str = "month"


@dataclass(frozen=True)
class IntervalPrice:
    """The priced interval: exact cost (8 decimals), usage per rate and per tier."""

    cost: Decimal
    usage: Decimal
    usage_by_rate: dict[str, Decimal] = field(default_factory=dict)
    usage_by_tier: tuple[Decimal, ...] = ()


def validate_version(version: PlanVersion) -> None:
    """Raise ValidationError unless periods tile the day and prices/tiers are sane."""
    errors: dict[str, str] = {}
    if version.kind not in ("flat", "tou", "tiered", "tiered_tou"):
        errors["kind"] = f"unknown plan kind {version.kind!r}"
    for rate in RATES:
        price = version.prices.get(rate)
        if price is None or price < 0 or price != price.quantize(Decimal("0.000001")):
            errors[f"price_{rate}"] = "a price ≥ 0 with at most 6 decimals is required"
    periods = sorted(version.periods)
    if not periods or len(periods) > MAX_PERIODS:
        errors["periods"] = f"1–{MAX_PERIODS} periods are required"
    else:
        edge = 0
        for start, end, rate in periods:
            if start != edge or end <= start or rate not in RATES:
                errors["periods"] = f"periods must tile 00:00–24:00 without gaps or overlaps (at minute {edge})"
                break
            edge = end
        if edge != DAY_MINUTES and "periods" not in errors:
            errors["periods"] = "periods must end at 24:00"
    lowers = [lower for lower, _ in version.tiers]
    if lowers != sorted(set(lowers)) or any(lower <= 0 for lower in lowers):
        errors["tiers"] = "tier thresholds must be distinct, positive and ascending"
    if version.tiers and version.kind not in TIER_KINDS:
        errors["tiers"] = f"a {version.kind} plan has no tiers"
    if version.tier_period not in ("month", "year"):
        errors["tier_period"] = "month or year"
    if errors:
        raise ValidationError("the price plan version is invalid: " + "; ".join(f"{k}: {v}" for k, v in errors.items()),
                              errors)


def local(ts: datetime, tz: str) -> datetime:
    """Wall-clock time of ``ts`` in zone ``tz`` (naive)."""
    return ts.astimezone(ZoneInfo(tz)).replace(tzinfo=None)


def rate_seconds(version: PlanVersion, t0: datetime, t1: datetime, tz: str) -> dict[str, Decimal]:
    """Seconds of the interval (t0, t1] falling in each rate's periods of the local day."""
    lt0, lt1 = local(t0, tz), local(t1, tz)
    out = {rate: ZERO for rate in RATES}
    day = datetime.combine(lt0.date(), datetime.min.time())
    while day < lt1:
        for start, end, rate in version.periods:
            lo = max(lt0, day + timedelta(minutes=start))
            hi = min(lt1, day + timedelta(minutes=end))
            if hi > lo:
                delta = hi - lo
                out[rate] += Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds) / 10**6
        day += timedelta(days=1)
    return out


def tier_period_start(t0: datetime, tz: str, period: str) -> date:
    """First local day of the tier period (month or year) containing ``t0``."""
    day = local(t0, tz).date()
    return day.replace(day=1) if period == "month" else day.replace(month=1, day=1)


def tier_usage(version: PlanVersion, cum_before: Decimal, usage: Decimal) -> tuple[Decimal, ...]:
    """Usage of the interval above each tier threshold (threshold inside the interval is split)."""
    cum_after = cum_before + usage
    parts = []
    for i, (lower, _) in enumerate(version.tiers):
        upper = version.tiers[i + 1][0] if i + 1 < len(version.tiers) else None
        hi = cum_after if upper is None else min(cum_after, upper)
        parts.append(max(ZERO, hi - max(cum_before, lower)))
    return tuple(parts)


def price_interval(
    version: PlanVersion,
    t0: datetime,
    t1: datetime,
    tz: str,
    usage: Decimal,
    *,
    usage_by_rate: Mapping[str, Decimal] | None = None,
    cum_before: Decimal = ZERO,
) -> IntervalPrice:
    """Price the usage of (t0, t1]; ``usage_by_rate`` are TOU register deltas when the meter has them."""
    if t1 <= t0:
        raise ValueError(f"interval end {t1} must be after its start {t0}")
    by_rate: dict[str, Decimal] = {}
    if version.kind in TOU_KINDS and usage_by_rate is not None:
        by_rate = {rate: usage_by_rate.get(rate, ZERO) for rate in RATES}
        usage = sum(by_rate.values(), ZERO)
        rate_cost = sum((by_rate[r] * version.prices[r] for r in RATES), ZERO)
    elif version.kind in TOU_KINDS:
        seconds = rate_seconds(version, t0, t1, tz)
        total = sum(seconds.values(), ZERO)
        weighted = sum((seconds[r] * version.prices[r] for r in RATES), ZERO)
        rate_cost = usage * weighted / total
        by_rate = {r: (usage * seconds[r] / total).quantize(USAGE_QUANTUM) for r in RATES}
    else:
        rate_cost = usage * version.prices["flat"]
        by_rate = {"flat": usage}
    tiers = tier_usage(version, cum_before, usage) if version.kind in TIER_KINDS else ()
    tier_cost = sum((part * surcharge for part, (_, surcharge) in zip(tiers, version.tiers)), ZERO)
    return IntervalPrice(round_sub_cent(rate_cost + tier_cost), usage, by_rate, tiers)


def surcharges_from_tier_prices(base: Decimal, tier_prices: list[tuple[Decimal, Decimal]]) -> tuple:
    """Convert tier prices [(threshold, price per unit above it)] to surcharges over ``base`` (tier 1)."""
    return tuple((lower, price - base) for lower, price in tier_prices)
