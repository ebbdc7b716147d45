"""Links only to pages the viewer may open.

A console page answers 404 to an operator without its view's ``permission_required`` permission, or when its module
is switched off for the group. Templates therefore link through these helpers, which read the same facts the view
checks (as ``webui.nav`` does for the menu), so a page never offers a link its viewer would get a 404 for:

- ``may_open('prepaid.rooms')`` → bool;
- ``page_url('prepaid.account', account_id=7)`` → the URL, or None (``ui.stat`` and similar take url-or-none);
- ``link_to(text, 'prepaid.account', account_id=7, class_='small')`` → ``<a>`` when allowed, else the plain text.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, g, url_for
from flask_login import current_user
from markupsafe import Markup, escape

from meterhub.tenants.scoping import has_permission


def may_open(endpoint: str) -> bool:
    """Whether the signed-in operator may open the page at ``endpoint`` (served, module on, permission held)."""
    view = current_app.view_functions.get(endpoint)
    if view is None or not current_user or not current_user.is_authenticated:
        return False
    cache = g.setdefault("may_open", {})
    if endpoint not in cache:
        from . import _disabled

        permission = getattr(view, "permission", None)
        blueprint = endpoint.rsplit(".", 1)[0] if "." in endpoint else ""
        cache[endpoint] = (blueprint not in _disabled(current_user)
                           and (not permission or has_permission(current_user, permission)))
    return cache[endpoint]


def page_url(endpoint: str, **values: Any) -> str | None:
    """The URL of ``endpoint`` when the operator may open it, else None."""
    return url_for(endpoint, **values) if may_open(endpoint) else None


def link_to(text: Any, endpoint: str, class_: str | None = None, **values: Any) -> Markup:
    """``<a href=…>text</a>`` when the operator may open ``endpoint``; otherwise ``text`` alone (escaped)."""
    url = page_url(endpoint, **values)
    if url is None:
        return Markup(escape(text))
    cls = Markup(' class="%s"') % class_ if class_ else ""
    return Markup('<a href="%s"%s>%s</a>') % (url, cls, text)


def register(app: Flask) -> None:
    app.add_template_global(may_open, "may_open")
    app.add_template_global(page_url, "page_url")
    app.add_template_global(link_to, "link_to")
