"""JSON shapes of API objects (money as strings with two decimals, timestamps ISO 8601)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any


def money(value: Decimal | None) -> str | None:
    return None if value is None else f"{Decimal(value).quantize(Decimal('0.01'))}"


def ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def number(value: Any) -> str | None:
    """A decimal quantity as a string (no float rounding)."""
    return None if value is None else str(value)


def property_(p: Any) -> dict[str, Any]:
    return {"id": p.id, "code": p.code, "name": p.name, "address": p.address, "timezone": p.timezone}


def room(r: Any) -> dict[str, Any]:
    return {"id": r.id, "property_id": r.property_id, "building_id": r.building_id, "floor_id": r.floor_id,
            "number": r.number, "name": r.name, "kind": r.kind, "area_m2": number(r.area_m2)}


def meter(m: Any) -> dict[str, Any]:
    return {"id": m.id, "property_id": m.property_id, "device_id": m.device_id, "room_id": m.room_id,
            "channel": m.channel, "utility": m.utility, "name": m.name, "status": m.status,
            "relay_closed": m.relay_closed, "relay_desired": m.relay_desired, "keep_power": m.keep_power,
            "last_seen_at": ts(m.last_seen_at)}


def account(a: Any, balance: Decimal | None) -> dict[str, Any]:
    from ..modules.prepaid.models import LEVELS

    return {"id": a.id, "property_id": a.property_id, "room_id": a.room_id, "number": a.number,
            "customer_name": a.customer_name, "status": a.status, "balance": money(balance),
            "level": LEVELS.get(a.alarm_level, "normal"), "alarm1": money(a.alarm1), "alarm2": money(a.alarm2),
            "overdraft_limit": money(a.overdraft_limit), "opened_at": ts(a.opened_at)}


def transfer(t: Any) -> dict[str, Any]:
    return {"id": t.id, "kind": t.kind, "amount": money(t.amount), "channel": t.channel, "receipt_no": t.receipt_no,
            "created_at": ts(t.created_at), "actor": t.actor}


def command(c: Any) -> dict[str, Any]:
    return {"id": c.id, "meter_id": c.meter_id, "kind": c.kind, "params": c.params, "state": c.state,
            "source": c.source, "created_at": ts(getattr(c, "created_at", None)), "error": c.error or "",
            "error_code": getattr(c, "error_code", None)}  # meterhub.commands.messages.MESSAGES


def alarm(a: Any) -> dict[str, Any]:
    return {"id": a.id, "property_id": a.property_id, "kind": a.kind, "state": a.state, "subject": a.subject_key,
            "meter_id": a.meter_id, "account_id": a.account_id, "occurrences": a.occurrences,
            "raised_at": ts(a.raised_at), "cleared_at": ts(a.cleared_at)}
