"""Text the core writes for people, translated when it is shown, in the language of whoever reads it.

The core marks such text with ``_l("Rent due %(date)s", date=...)`` (flask_babel's ``lazy_gettext``): a lazy
string translated each time it becomes a ``str`` — an error raised in a job or a request is shown in the
language of the request that shows it. Text that outlives the request (a bill line, a ledger reason, a portal
message, an apportioning explanation) is stored with :func:`stored` as its message id and parameters and shown
with :func:`shown`, again in the reader's language. Text a person typed is stored and shown as it is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from flask_babel import gettext, lazy_gettext, lazy_pgettext, pgettext
from flask_babel.speaklater import LazyString

__all__ = ["_l", "lazy_pgettext", "stored", "shown", "joined", "filled", "is_message"]

_l = lazy_gettext
PREFIX = "i18n:"


class Joined:
    """Several messages shown as one text (``"; "`` between them): an explanation built up step by step."""

    def __init__(self, parts: Iterable[Any] = (), sep: str = "; ") -> None:
        self.parts = list(parts)
        self.sep = sep

    def append(self, part: Any) -> None:
        self.parts.append(part)

    def __str__(self) -> str:
        return self.sep.join(str(p) for p in self.parts if str(p))

    def __bool__(self) -> bool:
        return bool(self.parts)


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


class Filled:
    """A message with ``{name}`` placeholders (a notification template) and the values to fill them with."""

    def __init__(self, message: Any, values: dict[str, Any]) -> None:
        self.message, self.values = message, dict(values)

    def __str__(self) -> str:
        return str(self.message).format_map(_Blank({k: str(v) for k, v in self.values.items()}))


def filled(message: Any, **values: Any) -> Filled:
    """``message`` (with ``{name}`` placeholders) filled with ``values`` when shown."""
    return Filled(message, values)


def joined(*parts: Any, sep: str = "; ") -> Joined:
    """Messages shown one after the other, separated by ``sep``."""
    return Joined(parts, sep)


def is_message(value: Any) -> bool:
    """Whether ``value`` is a translatable message (lazy string or joined messages)."""
    return isinstance(value, (LazyString, Joined, Filled))


def _encode(value: Any) -> Any:
    if isinstance(value, LazyString):
        args = list(value._args)
        data: dict[str, Any] = {"m": args[-1]}
        if len(args) == 2:
            data["c"] = args[0]
        if value._kwargs:
            data["p"] = {k: _encode(v) for k, v in value._kwargs.items()}
        return data
    if isinstance(value, Joined):
        return {"j": [_encode(p) for p in value.parts], "s": value.sep}
    if isinstance(value, Filled):
        return {"f": _encode(value.message), "v": {k: _encode(v) for k, v in value.values.items()}}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="minutes")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)  # Decimal, float and anything else: its text


def stored(value: Any, limit: int | None = None) -> str:
    """``value`` as text for a column: a message keeps its id and parameters (see :func:`shown`).

    When the stored form would exceed ``limit`` characters, the text in the current language is stored instead
    (cut to ``limit``), so a column never holds a broken message.
    """
    if not is_message(value):
        text = "" if value is None else str(value)
        return text[:limit] if limit else text
    text = PREFIX + json.dumps(_encode(value), ensure_ascii=False, separators=(",", ":"))
    if limit and len(text) > limit:
        return str(value)[:limit]
    return text


def _decode(data: Any) -> str:
    if not isinstance(data, dict):
        return "" if data is None else str(data)
    if "j" in data:
        return str(data.get("s", "; ")).join(t for t in (_decode(p) for p in data["j"]) if t)
    if "f" in data:
        values = _Blank({k: _decode(v) for k, v in (data.get("v") or {}).items()})
        try:
            return _decode(data["f"]).format_map(values)
        except (ValueError, IndexError, AttributeError):
            return _decode(data["f"])
    params = {k: _decode(v) if isinstance(v, dict) else v for k, v in (data.get("p") or {}).items()}
    try:
        if data.get("c"):
            return pgettext(data["c"], data["m"], **params)
        return gettext(data["m"], **params)
    except (KeyError, TypeError, ValueError):  # a translation whose placeholders do not fit: the msgid, filled
        return str(data["m"]) % params if params else str(data["m"])


def shown(value: Any) -> str:
    """The text of a stored value in the current language (plain text as it is; ``None`` as "")."""
    if value is None:
        return ""
    if is_message(value):
        return str(value)
    text = str(value)
    if not text.startswith(PREFIX):
        return text
    try:
        data = json.loads(text[len(PREFIX):])
    except ValueError:
        return text
    return _decode(data)
