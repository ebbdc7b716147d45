"""Who is signed in to the portal (a separate identity from operators, kept under its own session key)
and what they may see: only the accounts they are members of; anything else answers 404."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import abort, g, redirect, request, session, url_for
from sqlalchemy import Select, select

from ..db import use_group
from ..extensions import db
from ..modules.prepaid.account_page import Figures, figures_of, with_figures
from ..modules.prepaid.models import PrepaidAccount
from ..tenants.auth import end_sessions
from .models import PortalMembership, PortalUser

SESSION_KEY = "portal"


def sign_in(user: PortalUser) -> None:
    """Remember the portal user and their session version in the session (operators' sign-in is untouched)."""
    session[SESSION_KEY] = {"u": user.id, "g": user.group_id, "v": user.session_version or 1}
    session.permanent = True


def sign_out() -> None:
    """End the portal session, and every copy of its cookie (the user's session version moves on)."""
    user = current()
    if user is not None:
        end_sessions(user)
        db.session.commit()
    session.pop(SESSION_KEY, None)
    session.pop("portal_pending", None)
    g.pop("portal_user", None)


def current() -> PortalUser | None:
    """The signed-in portal user with the request's group set for RLS, or None."""
    if "portal_user" in g:
        return g.portal_user
    ident = session.get(SESSION_KEY)
    user = None
    if isinstance(ident, dict) and all(isinstance(ident.get(k), int) for k in ("g", "u", "v")):
        use_group(ident["g"])
        user = db.session.get(PortalUser, ident["u"])
        if user is None or not user.active or user.session_version != ident["v"]:
            user = None
            use_group(None)
    g.portal_user = user
    return user


def portal_login_required(view: Callable) -> Callable:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current() is None:
            return redirect(url_for("portal.login", next=request.path))
        return view(*args, **kwargs)

    return wrapper


def _mine(number: str) -> Select:
    user = current()
    if user is None:
        abort(404)
    return (select(PrepaidAccount, PortalMembership.role)
            .join(PortalMembership, PortalMembership.account_id == PrepaidAccount.id)
            .where(PortalMembership.portal_user_id == user.id, PrepaidAccount.number == number[:40]))


def account_for(number: str) -> tuple[PrepaidAccount, str]:
    """The signed-in user's account ``number`` and their role on it, or 404."""
    row = db.session.execute(_mine(number)).first()
    if row is None:
        abort(404)
    return row[0], row[1]


def account_page_for(number: str) -> tuple[PrepaidAccount, str, Figures]:
    """:func:`account_for` with the account's balance and stored forecast, read in the same statement."""
    row = db.session.execute(with_figures(_mine(number))).first()
    if row is None:
        abort(404)
    return row[0], row[1], figures_of(row)
