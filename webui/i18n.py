"""Locale and timezone selection: operator preference, then the session, then the browser."""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, g, has_app_context, has_request_context, request, session
from flask_babel import get_locale, get_translations
from flask_login import current_user


def select_locale() -> str:
    languages = current_app.config["LANGUAGES"]
    if not has_request_context():  # a job or a command: its messages in the default language (or force_locale's)
        return current_app.config["BABEL_DEFAULT_LOCALE"]
    if getattr(current_user, "is_authenticated", False) and current_user.locale in languages:
        return current_user.locale
    if session.get("lang") in languages:
        return session["lang"]
    best = request.accept_languages.best_match(["zh_CN", "zh", "en"]) if request else None
    if best == "en":
        return "en"
    if best in ("zh_CN", "zh"):
        return "zh_CN"
    return current_app.config["BABEL_DEFAULT_LOCALE"]


def select_timezone() -> str:
    """Babel's zone is the pages' display zone (the selected property's, else the group's; webui.format)."""
    from .format import display_zone

    return display_zone()


def _translations() -> Any:  # noqa: ANN401
    """The catalogue of the current locale, looked up once per request (and again only when ``force_locale``
    changes the locale): flask_babel looks it up for every string, a page's template asks a few hundred times."""
    if not has_app_context():
        return get_translations()
    # the locale flask_babel chose for this context (``force_locale`` replaces it), read without its lookups
    locale = getattr(g.get("_flask_babel"), "babel_locale", None)
    kept = g.get("_translations")
    if locale is not None and kept is not None and kept[0] is locale:
        return kept[1]
    translations = get_translations()
    g._translations = (get_locale(), translations)
    return translations


def install_template_gettext(app: Flask) -> None:
    """Templates' ``_()``/``ngettext``/``pgettext`` through :func:`_translations` (after ``babel.init_app``)."""
    app.jinja_env.install_gettext_callables(
        gettext=lambda s: _translations().ugettext(s),
        ngettext=lambda s, p, n: _translations().ungettext(s, p, n),
        pgettext=lambda c, s: _translations().upgettext(c, s),
        npgettext=lambda c, s, p, n: _translations().unpgettext(c, s, p, n),
        newstyle=True,
    )
