"""The confirmation step before a dangerous action (switch off, refund, reversal, close account, meter swap, batch
run, token revoke).

The page's form carries ``data-confirm`` (macros ``ui.confirm_button`` / ``ui.confirm_facts``): with JavaScript a
dialog names the room, tenant and amount and adds ``confirmed=yes``. The view refuses to act without that field,
so a bare POST (no JavaScript, a script, a replayed request) gets the confirmation page instead::

    page = confirmation_page(_("Switch off"), [(_("Room"), room_path(room)), (_("Tenant"), tenant)])
    if page is not None:
        return page
    ...act...
"""

from __future__ import annotations

from typing import Any

from flask import render_template, request, url_for
from flask_babel import gettext as _

from .util import local_path

CONFIRM_FIELD = "confirmed"


def confirmed() -> bool:
    """Whether this POST carries the confirmation (``confirmed=yes``)."""
    return request.form.get(CONFIRM_FIELD) == "yes"


def confirmation_page(title: str, facts: list[tuple[Any, Any]], *, button: str | None = None,
                      question: str | None = None, back: str | None = None, layout: str = "base.html",
                      extra_fields: list[tuple[str, str]] | None = None) -> str | None:
    """None when the request is confirmed; else the confirmation page naming ``facts``, whose button sends the
    same form fields (and ``extra_fields``, e.g. what an uploaded file held) again with ``confirmed=yes``."""
    if confirmed():
        return None
    fields = [(name, value) for name, value in request.form.items(multi=True)
              if name not in ("csrf_token", CONFIRM_FIELD)] + list(extra_fields or [])
    referrer = local_path(_referrer_path())
    return render_template(
        "confirm.html", layout=layout, title=title, facts=facts, fields=fields, action=request.path,
        button=button or title, question=question or _("Please check the details above. This cannot be undone."),
        back=back or referrer or url_for("console.dashboard"))


def _referrer_path() -> str | None:
    if not request.referrer:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(request.referrer)
    if parts.netloc and parts.netloc != request.host:
        return None
    return parts.path + (f"?{parts.query}" if parts.query else "")
