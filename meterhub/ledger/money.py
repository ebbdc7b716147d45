"""Money values: Decimal only, with the rounding rule of docs/money.md.

* Balances and ledger entries: CNY with 2 decimals (fen), ``NUMERIC(14,2)``.
* Unit prices: 6 decimals, ``NUMERIC(12,6)``. Usage: 4 decimals.
* The exact cost of one charged interval is rounded half-up (away from zero) to 8 decimals
  (``SUB_CENT``); a meter's running total of exact costs is rounded half-up to fen, and each booked
  charge is the difference of two consecutive rounded running totals. So the sum of everything booked
  for a meter always equals its exact total rounded once: no drift, no free usage in tiny intervals.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from ..errors import ValidationError

CENT = Decimal("0.01")
SUB_CENT = Decimal("0.00000001")
PRICE_QUANTUM = Decimal("0.000001")
USAGE_QUANTUM = Decimal("0.0001")
MAX_AMOUNT = Decimal("1000000.00")


def round_money(value: Decimal) -> Decimal:
    """Round to fen, half-up (PostgreSQL ``round(numeric, 2)`` does the same)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def round_sub_cent(value: Decimal) -> Decimal:
    """Round an exact interval cost to 8 decimals, half-up (SQL: ``round(x, 8)``)."""
    return value.quantize(SUB_CENT, rounding=ROUND_HALF_UP)


def booked_increment(total_before: Decimal, interval_cost: Decimal) -> Decimal:
    """The amount to book for an interval given the meter's exact running total before it."""
    return round_money(total_before + interval_cost) - round_money(total_before)


def parse_amount(raw: object, field: str = "amount", *, positive: bool = True) -> Decimal:
    """Parse a money amount typed by a person or sent by a client: at most 2 decimals, no floats."""
    if isinstance(raw, float):
        raise ValidationError(f"{field} must not be a float; send a string like '12.50'", {field: "float"})
    try:
        value = Decimal(str(raw).strip())
    except (InvalidOperation, ValueError) as err:
        raise ValidationError(f"{field} {raw!r} is not a number", {field: "not a number"}) from err
    if not value.is_finite():
        raise ValidationError(f"{field} must be a finite number", {field: "not finite"})
    if abs(value) > MAX_AMOUNT:  # before quantize(), which cannot hold 1e309 to the cent
        raise ValidationError(f"{field} {raw} exceeds the limit {MAX_AMOUNT}", {field: "too large"})
    if value != value.quantize(CENT):
        raise ValidationError(f"{field} {raw} has more than 2 decimals (fen)", {field: "max 2 decimals"})
    if positive and value <= 0:
        raise ValidationError(f"{field} must be greater than 0, got {raw}", {field: "must be > 0"})
    if abs(value) > MAX_AMOUNT:
        raise ValidationError(f"{field} {raw} exceeds the limit {MAX_AMOUNT}", {field: "too large"})
    return value.quantize(CENT)
