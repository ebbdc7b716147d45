"""Form errors shown beside their fields (the ``ui.field`` and picker macros' ``errors``).

A view that re-renders a refused form::

    except MeterhubError as err:
        refused(err, FIELDS)   # {field: message} beside the fields; the rest is flashed at the top
        return the_page(), 400

``refused`` also keeps the messages and the form's fields for the rest of the request: ``ui.field`` and the pickers
then show each message beside its field and the value as typed without being handed ``errors`` or ``form``
(``form_errors()`` / ``typed(name, default)`` are the template globals they read). Every POST form of
``webui/templates`` is listed in ``tests/test_form_errors.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import logging

from flask import Flask, Response, current_app, flash, g, request
from flask_babel import lazy_gettext as _l

from meterhub.i18n import is_message
from meterhub.labels import label

log = logging.getLogger(__name__)

#: What to say beside a field when the error's message is plain English text of a parser shared with the API
#: (``parse_amount``, ``check_topup``): by the code in the error's field map. Other plain messages are shown as
#: they are.
CODE_MESSAGES = {
    "not a number": _l("Enter a number, e.g. 12.50."),
    "float": _l("Enter a number, e.g. 12.50."),
    "not finite": _l("Enter a number, e.g. 12.50."),
    "max 2 decimals": _l("At most 2 decimals (fen)."),
    "must be > 0": _l("Enter an amount greater than 0."),
    "too large": _l("This amount is too large."),
    "above the group's maximum": _l("Above the group's largest single top-up: split it, or ask a group admin to "
                                    "raise the limit in Settings."),
}


def _message(err: Exception, field: str, code: str) -> str:
    own = (getattr(err, "messages", None) or {}).get(field)
    if own is not None:
        return str(own)
    if err.args and is_message(err.args[0]):
        return str(err)
    return str(CODE_MESSAGES.get(code, err))


def field_errors(err: Exception, fields: Iterable[str] | None = None,
                 aliases: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{field: message}`` for each form field a ``ValidationError`` names (its ``errors``), translated; only the
    ``fields`` of the form when given. ``aliases`` maps a service's field name to the form's (``tariff`` →
    ``tariff_id``). {} for other errors, which the page shows at the top instead."""
    wanted = set(fields) if fields is not None else None
    found: dict[str, str] = {}
    for name, code in (getattr(err, "errors", None) or {}).items():
        field = (aliases or {}).get(name, name)
        if wanted is None or field in wanted:
            found.setdefault(field, _message(err, name, str(code)))
    return found


def refused(err: Exception, fields: Iterable[str], aliases: Mapping[str, str] | None = None,
            form: str | None = None) -> dict[str, str]:
    """The messages of ``err`` beside the form's ``fields``; what belongs to no field of the form is flashed (at
    the top of the page). ``form`` names the refused form when a page has several with the same field names
    (default: the posted ``action``); a macro given another ``form`` shows neither message nor typed value."""
    errors = field_errors(err, fields, aliases)
    named = getattr(err, "errors", None) or {}
    own = getattr(err, "messages", None) or {}
    left = [name for name in named if (aliases or {}).get(name, name) not in errors]
    g.form_errors = {**getattr(g, "form_errors", {}), **errors}
    g.refused_form = form if form is not None else _sent().get("action")
    g.form_fields = set(fields) | set(getattr(g, "form_fields", ()))
    if not errors:
        flash(str(err), "error")
    elif left and own:
        for name in left:
            flash(str(own.get(name, err)), "error")
    elif left:
        flash(str(err), "error")
    return errors


def _sent() -> Any:
    """What the refused form sent: its body, or its query string for a GET form (a report's filters)."""
    return request.form if request.method == "POST" else request.args


def _this_form(form: str | None) -> bool:
    return bool(g) and (form is None or form == getattr(g, "refused_form", None))


def form_errors(form: str | None = None) -> dict[str, str]:
    """The messages of the form this request refused (``refused``), by field; {} otherwise or for another
    ``form`` of the page."""
    return getattr(g, "form_errors", {}) if _this_form(form) else {}


def typed(name: str, default: Any = "", form: str | None = None) -> Any:
    """What was typed into field ``name`` of the form this request refused; ``default`` otherwise (a fresh form, or
    a field of another ``form`` on the page)."""
    sent = _sent()
    if _this_form(form) and name in getattr(g, "form_fields", ()) and name in sent:
        return sent.get(name)
    return default


def showing(name: str) -> str:
    """Record that the page shows the message of field ``name`` (ui.field, the pickers and hand-made feedback call
    it); a refused field whose message no control showed is an error (see ``_unshown``). Renders nothing."""
    g.fields_shown = {*getattr(g, "fields_shown", ()), name}
    return ""


def _unshown(response: Response) -> Response:
    """A refused form whose page shows no message for one of the fields ``refused`` named: the message would be
    lost, so it is logged (and raised in tests): list only the fields the form shows with ``ui.field``."""
    lost = set(getattr(g, "form_errors", {})) - set(getattr(g, "fields_shown", ()))
    if lost and not 300 <= response.status_code < 400 and response.mimetype == "text/html":
        log.error("%s %s: no control shows the message of %s", request.method, request.path, sorted(lost))
        if current_app.testing:
            raise RuntimeError(f"{request.path}: the refused form shows no message for {sorted(lost)}")
    return response


def ticked(name: str, default: bool = False, form: str | None = None) -> bool:
    """Whether checkbox ``name`` is ticked: as sent in the form this request refused, else ``default``."""
    if _this_form(form) and name in getattr(g, "form_fields", ()):
        return name in _sent()
    return default


def choices(values: Iterable[str], family: str | None = None) -> list[tuple[str, str]]:
    """``(value, its label)`` pairs for a select of ``ui.field``: ``choices(modes, 'post_mode')``."""
    return [(v, label(v, family) if family else v) for v in values]


def options_of(objects: Iterable[Any], text: str = "name") -> list[tuple[Any, Any]]:
    """``(id, name)`` pairs of ``objects`` for a select of ``ui.field``: ``options_of(properties)``."""
    return [(o.id, getattr(o, text)) for o in objects]


def register(app: Flask) -> None:
    app.add_template_global(choices, "choices")
    app.add_template_global(options_of, "options_of")
    app.add_template_global(form_errors, "form_errors")
    app.add_template_global(typed, "typed")
    app.add_template_global(ticked, "ticked")
    app.add_template_global(showing, "showing")
    app.after_request(_unshown)
