"""Routes a resource module declares without importing the blueprint (so ``blueprint`` never imports the views
nor the views the blueprint: the plugin attaches one to the other)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint


class Routes:
    """A list of ``(rule, view, options)`` filled with ``@routes.route(rule, methods=[...])``, like Flask's."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, Callable[..., Any], dict[str, Any]]] = []

    def route(self, rule: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
            self.entries.append((rule, view, options))
            return view

        return decorator

    def attach(self, bp: Blueprint) -> None:
        """Add every route to ``bp`` (endpoint: the view's name, as ``@bp.route`` would)."""
        for rule, view, options in self.entries:
            options = dict(options)
            bp.add_url_rule(rule, options.pop("endpoint", view.__name__), view, **options)
