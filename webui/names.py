"""Human names in pages: ``{{ alarm.subject_key|subject_name }}``, ``{{ ('meter', c.meter_id)|subject_name }}``.

A view that lists many rows names them all in one batch first (one query per kind), through
:func:`prefetch`; the filter then reads the request's cache. A name not prefetched is looked up on its own
(correct, one query more). Names come from :mod:`meterhub.names`, scoped to the signed-in operator's group.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask import Flask, current_app, g
from flask_login import current_user

from meterhub.extensions import db
from meterhub.names import Subject, SubjectName, name_of, parse_subject_key, subject_names


def _subject(value: Any, ident: Any = None) -> Subject | None:
    if ident is not None:
        return (str(value), int(ident))
    if isinstance(value, str):
        return parse_subject_key(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and value[1] is not None:
        return (str(value[0]), int(value[1]))
    return None


def _cache() -> dict[Subject, SubjectName]:
    if "subject_names" not in g:
        g.subject_names = {}
    return g.subject_names


def prefetch(subjects: Iterable[Any]) -> dict[Subject, SubjectName]:
    """Name ``subjects`` (``(kind, id)`` pairs or subject keys) in one batch per kind; returns the cache."""
    cache = _cache()
    wanted = {s for s in map(_subject, subjects) if s is not None and s not in cache}
    if wanted and current_user and current_user.is_authenticated:
        cache.update(subject_names(db.session, current_user.group_id, wanted))
    return cache


def subject_name(value: Any, ident: Any = None) -> str:
    """Jinja filter: the human name of a subject key (``"meter:12"``), a ``(kind, id)`` pair, or ``kind, id``."""
    subject = _subject(value, ident)
    if subject is None:
        return "—"
    return name_of(prefetch([subject]), subject)


def subject_parts(value: Any, ident: Any = None) -> SubjectName | None:
    """Jinja filter: the parts of a subject's name (``.property_name``, ``.place``, ``.tenant``, ``.own``)."""
    subject = _subject(value, ident)
    return prefetch([subject]).get(subject) if subject is not None else None


def has_page(endpoint: str) -> bool:
    """Jinja global: whether ``endpoint`` is served (a module's pages exist only when it is installed)."""
    return endpoint in current_app.view_functions


def register(app: Flask) -> None:
    app.add_template_global(has_page, "has_page")
    app.add_template_filter(subject_name, "subject_name")
    app.add_template_filter(subject_parts, "subject_parts")
