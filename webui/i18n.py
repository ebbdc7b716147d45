"""Locale and timezone selection: operator preference, then the session, then the browser."""

from __future__ import annotations

from flask import current_app, has_request_context, request, session
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
