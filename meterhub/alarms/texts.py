"""What an alarm says, in the reader's language: its reason and each value of its detail.

An alarm stores numbers, times and codes in ``alarms.detail``; words are made when the alarm is shown (a page in
the operator's language) or sent (a notification in its notifier's language). A reason is a code of
:data:`meterhub.commands.messages.MESSAGES` with its parameters, stored next to the English text:

    detail = {"amount": "50.00", **reason_fields(failure)}   # reason, reason_code, reason_params
    reason_text(detail)                                        # the reason in the current language

An alarm raised before the codes existed has its English ``reason`` only: that text is shown.
"""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_pgettext

from ..commands.messages import LABELLED, MESSAGES, Failure, describe
from ..i18n import _l
from .notes import level_name

#: Detail keys that hold a code for machines (the webhook payload), never shown as rows of their own.
CODE_KEYS = ("reason_code", "reason_params")
#: Detail keys of alarms raised before the keys were named for what they hold (purchase counter events).
RENAMED = {"purchase_mismatch": {"meter": "meter_count", "ours": "our_count"}}
UNKNOWN = "unknown"  # an unknown value, as old rows stored it
YES, NO = lazy_pgettext("value", "Yes"), lazy_pgettext("value", "No")
UNKNOWN_VALUE = lazy_pgettext("value", "Unknown")


def reason_fields(failure: Failure) -> dict[str, Any]:
    """The detail entries of a reason: the English text (logs, old readers), its code and its parameters."""
    return {"reason": failure.text[:300], "reason_code": failure.code, "reason_params": dict(failure.params)}


def reason_text(detail: dict[str, Any] | None) -> str:
    """The alarm's reason in the current language (its stored text when it has no known code)."""
    detail = detail or {}
    return describe(detail.get("reason_code"), detail.get("reason_params"), str(detail.get("reason") or ""))


def reason_message(detail: dict[str, Any] | None) -> Any:
    """The reason as a message to store (read later in the reader's language); plain text for old rows."""
    detail = detail or {}
    code, params = detail.get("reason_code"), dict(detail.get("reason_params") or {})
    if code not in MESSAGES:
        return str(detail.get("reason") or "")
    from ..labels import label

    values = {k: label(v, LABELLED[k]) if k in LABELLED else v for k, v in params.items()}
    return _l(MESSAGES[code]._args[-1], **values)


def details(kind: str, detail: dict[str, Any] | None) -> dict[str, Any]:
    """The detail with keys named as today (old rows' keys renamed) and without the code keys."""
    renamed = RENAMED.get(kind, {})
    return {renamed.get(k, k): v for k, v in (detail or {}).items() if k not in CODE_KEYS}


def value_text(key: str, value: Any, detail: dict[str, Any] | None = None) -> Any:
    """One detail value as words of the current language (a message or text); numbers and dates as they are."""
    if key == "reason":
        return reason_text(detail) if detail is not None else str(value)
    if value is None or value == UNKNOWN:
        return UNKNOWN_VALUE
    if isinstance(value, bool):
        return YES if value else NO
    if key == "level":
        return level_name(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)
