"""The notes of an alarm's history (raised with what, cleared why), as messages read in the reader's language.

An event's note is stored with :func:`meterhub.i18n.stored` and shown with ``|shown``: a raised alarm's detail
reads "Balance ¥6.00 · Alarm level 1" (余额 ¥6.00 · 一级报警), never ``balance=6.00, level=1``. A note an operator
typed (acknowledging) is stored and shown as typed.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from flask_babel import lazy_pgettext

from ..i18n import _l, joined

LEVELS = {
    0: lazy_pgettext("alarm level", "Back to normal"),
    1: lazy_pgettext("alarm level", "Alarm level 1"),
    2: lazy_pgettext("alarm level", "Alarm level 2"),
    3: lazy_pgettext("alarm level", "In arrears"),
}
MONEY_KEYS = {"balance", "amount"}


def level_name(level: Any) -> Any:
    """The message naming a balance alarm level (0 normal … 3 arrears); an unknown level as itself."""
    try:
        return LEVELS.get(int(level), str(level))
    except (TypeError, ValueError):
        return str(level)


def money_text(value: Any) -> str:
    """An amount as ¥1,234.50 (a value that is not a number as it is)."""
    try:
        amount = Decimal(str(value)).quantize(Decimal("0.01"))
    except (InvalidOperation, ValueError):
        return str(value)
    return f"-¥{-amount:,.2f}" if amount < 0 else f"¥{amount:,.2f}"


def _time(value: Any) -> str:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.utcoffset() is None:
        return f"{moment:%Y-%m-%d %H:%M}"
    return f"{moment:%Y-%m-%d %H:%M} UTC" if not moment.utcoffset() else f"{moment:%Y-%m-%d %H:%M %z}"


def _value(key: str, value: Any) -> Any:
    from .texts import value_text

    if value is None:
        return "—"
    if isinstance(value, bool) or key == "reason":
        return value_text(key, value)
    if key == "level":
        return level_name(value)
    if key in MONEY_KEYS:
        return money_text(value)
    if key == "since" or key.endswith("_at"):
        return _time(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return value_text(key, value)


def detail_note(detail: dict[str, Any] | None) -> Any:
    """A raised alarm's detail as a message: each key's label and its formatted value, `` · `` between."""
    from ..labels import LABELS

    from .texts import CODE_KEYS, reason_message

    labels = LABELS.get("alarm_detail", {})
    parts = []
    for key, value in (detail or {}).items():
        if key in CODE_KEYS:
            continue
        shown = reason_message(detail) if key == "reason" else _value(key, value)
        if key == "level":
            parts.append(shown)  # "Alarm level 1" labels itself
        else:
            parts.append(_l("%(label)s %(value)s", label=labels.get(key, key), value=shown))
    return joined(*parts, sep=" · ")
