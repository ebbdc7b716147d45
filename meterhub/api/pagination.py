"""Keyset pagination: ``?limit=`` (1–200, default 50) and ``?after=<id>``; the response carries the cursor
of the next page (``next_after``, null on the last page)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from flask import request
from sqlalchemy import Select

from ..extensions import db
from .errors import ApiError

MAX_LIMIT = 200
DEFAULT_LIMIT = 50


def int_arg(name: str, default: int | None = None, minimum: int | None = None,
            maximum: int | None = None) -> int | None:
    """A query-string integer, validated (422 when not a number or out of range)."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(422, f"Query parameter {name!r} must be an integer.", {name: "not an integer"}) from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ApiError(422, f"Query parameter {name!r} must be between {minimum} and {maximum}.",
                       {name: "out of range"})
    return value


def date_arg(name: str, default: date | None = None) -> date | None:
    """A query-string date (YYYY-MM-DD)."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ApiError(422, f"Query parameter {name!r} must be a date YYYY-MM-DD.", {name: "not a date"}) from None


def datetime_arg(name: str, default: datetime | None = None) -> datetime | None:
    """A query-string ISO 8601 timestamp with a time zone."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(422, f"Query parameter {name!r} must be an ISO 8601 timestamp.", {name: "not a timestamp"}) from None
    if value.tzinfo is None:
        raise ApiError(422, f"Query parameter {name!r} needs a time zone (e.g. +08:00 or Z).", {name: "no time zone"})
    return value


def page(stmt: Select, id_column: Any, serialize: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """One page of ``stmt`` ordered by ``id_column``, serialized."""
    limit = int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT) or DEFAULT_LIMIT
    after = int_arg("after", None, 0, 2**62)
    if after is not None:
        stmt = stmt.where(id_column > after)
    rows = list(db.session.execute(stmt.order_by(id_column).limit(limit + 1)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    items = [serialize(row[0] if len(row) == 1 else row) for row in rows]
    next_after = items[-1]["id"] if more and items else None
    return {"data": items, "limit": limit, "next_after": next_after}


def enum_arg(name: str, values: tuple[str, ...]) -> str | None:
    """A query-string value that must be one of ``values`` (422 otherwise)."""
    raw = request.args.get(name)
    if raw is None:
        return None
    if raw not in values:
        raise ApiError(422, f"Query parameter {name!r} must be one of {', '.join(values)}.", {name: "invalid"})
    return raw
