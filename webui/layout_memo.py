"""What every console page's layout shows, kept a short while per process: the menu and the property switcher.

Both were built on every request (the plugins' menu hook, a URL per entry, a query for the properties). They depend
on who asks, so they are kept per operator (id, role, scope), group modules and locale, for ``TTL_S`` seconds. A
property or an operator's scope written through the ORM in this process forgets every kept list at once (an
``after_flush`` listener); another process's write shows here within ``TTL_S``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

from flask import Flask, current_app
from sqlalchemy import event
from sqlalchemy.orm import Session

TTL_S = 30.0
MAX_ENTRIES = 10_000  # a process never holds more: the memo starts over past it

_generation = 0  # bumped by a flush that writes a property or an operator's scope


class PropertyChoice(NamedTuple):
    """A property as the switcher and the filters list it."""

    id: int
    name: str


class LayoutMemo:
    """``get(key, make)``: the value kept for ``key`` while fresh, else ``make()`` (kept unless a write landed
    while it was made)."""

    def __init__(self, ttl: float = TTL_S) -> None:
        self.ttl = ttl
        self._items: dict[Hashable, tuple[float, int, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        now = time.monotonic()
        generation = _generation
        hit = self._items.get(key)
        if hit is not None and hit[0] > now and hit[1] == generation:
            return hit[2]
        value = make()
        with self._lock:
            if len(self._items) >= MAX_ENTRIES:
                self._items.clear()
            if generation == _generation:
                self._items[key] = (now + self.ttl, generation, value)
        return value


def memo() -> LayoutMemo:
    """The current app's memo."""
    return current_app.extensions["layout_memo"]


def register(app: Flask) -> None:
    app.extensions["layout_memo"] = LayoutMemo()


def _operator_key(operator: Any) -> tuple:  # noqa: ANN401
    from meterhub.tenants.scoping import property_ids

    scope = property_ids(operator)
    return (operator.group_id, operator.id, operator.role, None if scope is None else frozenset(scope))


def properties(operator: Any) -> list[PropertyChoice]:  # noqa: ANN401
    """The properties ``operator`` may see, by name (``scoping.visible_properties``), as (id, name)."""
    from meterhub.tenants.scoping import visible_properties

    return memo().get(("properties", *_operator_key(operator)),
                      lambda: [PropertyChoice(p.id, p.name) for p in visible_properties(operator)])


def menu(operator: Any, disabled: set[str], locale: str, make: Callable[[], list]) -> list:  # noqa: ANN401
    """The console menu of ``operator`` (``make()`` builds it)."""
    from flask import request

    return memo().get(("menu", *_operator_key(operator), frozenset(disabled), locale, request.script_root), make)


def _forget_all() -> None:
    global _generation
    _generation += 1


@event.listens_for(Session, "after_flush")
def _properties_written(session: Session, context: Any) -> None:  # noqa: ANN401
    from meterhub.tenants.models import OperatorProperty, Property

    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, (Property, OperatorProperty)):
            _forget_all()
            return
