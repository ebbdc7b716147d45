"""Price plans: flat, TOU (sharp/peak/flat/valley), tiered and tiered+TOU, with effective dates."""

from .pricing import IntervalPrice, PlanVersion, price_interval, rate_seconds, tier_usage, validate_version

__all__ = ["IntervalPrice", "PlanVersion", "price_interval", "rate_seconds", "tier_usage", "validate_version"]
