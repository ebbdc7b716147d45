"""Report definitions: key, name, permission, columns and a row generator; plugins add more.

A definition's ``rows(session, filter)`` yields tuples in column order and may stream (server-side cursor,
``yield_per``) so an xlsx export of any size runs in bounded memory. ``chart`` names the x column and the
y columns the console plots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from flask_babel import lazy_gettext as _l
from sqlalchemy.orm import Session

from ..errors import ValidationError
from ..plugins import StartupError, get_plugin_manager
from .filters import FILTERABLE, ReportFilter


#: The period and the place filters: what most reports take (``ReportDefinition.filters``).
PLACE_FILTERS = ("period", "property", "building", "room", "meter")


@dataclass(frozen=True)
class Column:
    key: str
    label: Any
    kind: str = "text"  # text | number | money | percent | date


@dataclass(frozen=True)
class ReportDefinition:
    """One report: how to produce its rows and who may see it."""

    key: str
    name: Any
    permission: str
    columns: tuple[Column, ...]
    rows: Callable[[Session, ReportFilter], Iterator[tuple]]
    description: Any = ""
    chart: tuple[str, tuple[str, ...]] | None = None
    chart_split: str | None = None  # a column whose values get series of their own (never add kWh to m³)
    filters: tuple[str, ...] = PLACE_FILTERS
    options: dict[str, Any] = field(default_factory=dict)

    def header(self) -> list[str]:
        return [str(c.label) for c in self.columns]

    def check(self, f: ReportFilter) -> None:
        """Refuse a filter this report cannot apply, rather than ignore it and show more than was asked for."""
        if extra := f.unsupported(self.filters):
            takes = ", ".join(n for n in ("period", *FILTERABLE) if n in self.filters)
            raise ValidationError(f"The {self.key} report cannot be filtered by {', '.join(extra)}; it takes: {takes}.",
                                  {FILTERABLE[name]: "not supported by this report" for name in extra})


def builtin_reports() -> list[ReportDefinition]:
    """The reports that ship with meterhub."""
    from . import comparison, finance, operations, usage

    return [*usage.REPORTS, *comparison.REPORTS, *finance.REPORTS, *operations.REPORTS]


def all_reports() -> dict[str, ReportDefinition]:
    """Every report by key (built-in and from plugins); duplicate keys stop startup."""
    registry: dict[str, ReportDefinition] = {}
    owner: dict[str, str] = {}
    for impl in reversed(get_plugin_manager().hook.register_reports.get_hookimpls()):
        for report in impl.function() or []:
            if report.key in registry:
                raise StartupError(f"Duplicate report key {report.key!r} from plugins {owner[report.key]} and "
                                   f"{impl.plugin_name}")
            registry[report.key], owner[report.key] = report, impl.plugin_name
    return registry


def get_report(key: str) -> ReportDefinition | None:
    return all_reports().get(key)


LEVEL_LABELS = {"meter": _l("Meter"), "room": _l("Room"), "building": _l("Building"), "property": _l("Property")}
