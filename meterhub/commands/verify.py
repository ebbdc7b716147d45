"""What a meter's values say about a command: already carried out, not carried out, or cannot tell."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool) or value is None:
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _number(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def shown(kind: str, params: dict[str, Any], values: dict[str, Any]) -> bool | None:
    """Whether ``values`` (one reading of the meter) show the command done; None when they cannot tell."""
    if kind == "read_now":
        return True
    if kind in ("switch", "resume_prepaid") and "relay_closed" in values:
        ok = _flag(values["relay_closed"]) is bool(params["closed"])
        if kind == "resume_prepaid" and "keep_power" in values:
            ok = ok and _flag(values["keep_power"]) is False
        return ok
    if kind == "valve" and "valve_open" in values:
        return _flag(values["valve_open"]) is bool(params["open"])
    if kind == "keep_power" and "keep_power" in values:
        return _flag(values["keep_power"]) is bool(params.get("on", True))
    if kind == "write_topup" and values.get("purchase_count") is not None:
        count = _number(values["purchase_count"])
        return None if count is None else count >= int(params["purchase_count"])
    return None


def purchase_count(values: dict[str, Any]) -> int | None:
    """The meter's purchase counter in one reading, if it reports one."""
    count = _number(values.get("purchase_count")) if values.get("purchase_count") is not None else None
    return None if count is None else int(count)
