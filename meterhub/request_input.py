"""Malformed request input refused in one place, before any view runs: 400 with a message saying what to fix.

- NUL bytes (and lone surrogates) in a query, form or URL value: PostgreSQL cannot store or compare them.
- JSON bodies nested deeper than ``MAX_JSON_DEPTH`` (``[`` x 100000 overflowed the parser's recursion), or
  holding NUL bytes or lone surrogates in a string.
- Page numbers that are not whole numbers from 1 to ``MAX_PAGE`` (one parser for every paged list).
- ``request.args.get(name, type=int)`` and the form's alike answer the default for integers beyond 64 bits.

Views and the API then see only text and JSON they can store.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from flask import Flask, Request, request
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.exceptions import BadRequest

MAX_JSON_DEPTH = 32
MAX_PAGE = 100_000
MAX_BIGINT = 2**63 - 1
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable(text: str) -> bool:
    """True when ``text`` holds a NUL byte or a lone surrogate (neither can be stored as PostgreSQL text)."""
    return _UNSTORABLE.search(text) is not None


def _refuse(where: str, name: str) -> BadRequest:
    return BadRequest(f"The {where} value {name[:40]!r} contains a NUL byte or an invalid character; "
                      "remove it and send the request again.")


def _check_json(value: Any) -> None:
    """Refuse a parsed JSON document that is too deep or holds unstorable strings (iteratively)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if unstorable(item):
                raise BadRequest("A JSON string contains a NUL byte (\\u0000) or a lone surrogate; remove it.")
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth > MAX_JSON_DEPTH:
            raise BadRequest(f"The JSON body is nested more than {MAX_JSON_DEPTH} levels deep; send a flatter "
                             "document.")
        if isinstance(item, dict):
            for key, child in item.items():
                if unstorable(key):
                    raise BadRequest("A JSON key contains a NUL byte (\\u0000) or a lone surrogate; remove it.")
                stack.append((child, depth + 1))
        else:
            stack.extend((child, depth + 1) for child in item)


class BoundedJSON:
    """The JSON module request bodies are parsed with: the standard parser plus the limits above."""

    @staticmethod
    def loads(data: str | bytes, **kwargs: Any) -> Any:
        """Parse ``data``; BadRequest for too deep or unstorable documents (ValueError for invalid JSON)."""
        try:
            value = json.loads(data, **kwargs)
        except RecursionError:
            raise BadRequest(f"The JSON body is nested more than {MAX_JSON_DEPTH} levels deep; send a flatter "
                             "document.") from None
        _check_json(value)
        return value

    @staticmethod
    def dumps(obj: Any, **kwargs: Any) -> str:
        """Serialize ``obj`` (standard library)."""
        return json.dumps(obj, **kwargs)


class BoundedValues(ImmutableMultiDict):
    """Query and form values whose ``get(..., type=int)`` treats an integer beyond 64 bits as not a number
    (like any other text ``int()`` refuses), so no such value reaches a query as a bigint parameter."""

    def get(self, key: Any, default: Any = None, type: Any = None) -> Any:  # noqa: A002  (werkzeug's name)
        value = super().get(key, default, type)
        return default if type is int and isinstance(value, int) and abs(value) > MAX_BIGINT else value

    def getlist(self, key: Any, type: Any = None) -> list[Any]:  # noqa: A002
        values = super().getlist(key, type)
        return [v for v in values if not (type is int and abs(v) > MAX_BIGINT)]


class CheckedRequest(Request):
    """Flask's request whose ``get_json`` applies ``BoundedJSON`` and whose values are ``BoundedValues``."""

    parameter_storage_class = BoundedValues

    @property
    def json_module(self) -> type[BoundedJSON]:  # type: ignore[override]
        """The parser of request bodies (Flask assigns the app's provider per request; bodies keep this one)."""
        return BoundedJSON

    @json_module.setter
    def json_module(self, _provider: Any) -> None:
        pass


def _check_values(where: str, values: Mapping[str, Any] | Any) -> None:
    for name, value in values.items(multi=True) if hasattr(values, "getlist") else values.items():
        if unstorable(name) or (isinstance(value, str) and unstorable(value)):
            raise _refuse(where, name)


def refuse_unstorable_input() -> None:
    """before_request: 400 when a query, form or URL value holds a NUL byte."""
    _check_values("query", request.args)
    if request.view_args:
        _check_values("URL", request.view_args)
    if request.method not in ("GET", "HEAD", "OPTIONS") and request.mimetype in (
            "application/x-www-form-urlencoded", "multipart/form-data"):
        _check_values("form", request.form)
        for name, upload in request.files.items(multi=True):
            if unstorable(name) or unstorable(upload.filename or ""):
                raise _refuse("file", name)


def data_error_message(err: Exception) -> str:
    """What to tell the user when the database refused a value (too long, out of range, not of its type)."""
    diag = getattr(getattr(err, "orig", None), "diag", None)
    reason = getattr(diag, "message_primary", None) or "a value does not fit its field"
    return f"A value was refused by the database ({reason}); shorten or correct it and try again."


def page_number(name: str = "page", maximum: int = MAX_PAGE) -> int:
    """The page number in the query string (1 when absent or blank); 400 when not a whole number 1-``maximum``."""
    raw = request.args.get(name, "").strip()
    if not raw:
        return 1
    if not raw.isascii() or not raw.isdigit() or len(raw) > len(str(maximum)) or not 1 <= int(raw) <= maximum:
        raise BadRequest(f"The page number {raw[:20]!r} is not a whole number from 1 to {maximum}.")
    return int(raw)


def init_app(app: Flask) -> None:
    """Install the checks on ``app`` (before its blueprints, so they run first)."""
    app.request_class = CheckedRequest
    app.before_request(refuse_unstorable_input)
