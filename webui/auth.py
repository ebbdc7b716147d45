"""Sign-in, sign-out, password change and language switch."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required, login_user, logout_user

from meterhub.db import use_group
from meterhub.errors import RateLimited, ValidationError
from meterhub.extensions import db
from meterhub.i18n import _l
from meterhub.models import utcnow
from meterhub.redis_conn import get_redis
from meterhub.tenants.auth import LoginThrottle, burn_time, end_sessions, hash_password, lookup, verify_password
from meterhub.tenants.models import Operator

from .forms import refused
from .util import client_ip, local_path, record

bp = Blueprint("auth", __name__)


def _throttle() -> LoginThrottle:
    cfg = current_app.config
    return LoginThrottle(get_redis(), cfg["LOGIN_MAX_FAILURES"], cfg["LOGIN_WINDOW_SECONDS"], cfg["REDIS_NAMESPACE"],
                         engine=db.engine)  # counts in PostgreSQL while Redis is down


def _safe_next(target: str | None) -> str:
    return local_path(target) or url_for("console.dashboard")


def too_many_attempts(err: RateLimited, template: str, **context: object):
    """The 429 answer to a throttled sign-in: the page with the wait in words and ``Retry-After``."""
    message = _("Too many failed sign-ins. Try again in %(wait)s or ask your group admin to reset your password.",
                wait=wait_words(err.retry_after))
    return render_template(template, error=message, **context), 429, {"Retry-After": str(err.retry_after)}


def wait_words(seconds: int) -> str:
    """A wait in the UI's language: "45 seconds", "3 minutes"."""
    if seconds < 60:
        return _("%(n)d seconds", n=seconds)
    return _("%(n)d minutes", n=-(-seconds // 60))


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method != "POST":
        return render_template("auth/login.html")
    username = request.form.get("username", "").strip().lower()[:64]
    password = request.form.get("password", "")
    throttle = _throttle()
    db.session.rollback()  # nothing read so far is kept: the throttle may use a connection of its own
    try:
        throttle.check(username, client_ip())
    except RateLimited as err:
        return too_many_attempts(err, "auth/login.html", username=username)
    target = lookup(db.session, username) if username else None
    operator = None
    if target is not None:
        use_group(target.group_id)
        operator = db.session.get(Operator, target.operator_id)
    # Known, unknown and deactivated users cost one hash verification each (no timing oracle).
    matches = verify_password(operator.password_hash, password) if operator is not None else burn_time(password)
    if operator is None or not operator.active or not matches:
        if operator is not None:
            record("login.failed", operator, {"username": username}, group_id=operator.group_id,
                   actor=username, operator_id=operator.id)
        db.session.commit()  # the throttle may use a connection of its own: never two at once per sign-in
        throttle.failed(username, client_ip())
        return render_template("auth/login.html", error=_("Wrong username or password."), username=username), 401
    session.clear()
    login_user(operator)
    record("login", operator, group_id=operator.group_id, actor=operator.username, operator_id=operator.id)
    db.session.commit()
    throttle.succeeded(username, client_ip())  # after the commit: one database connection at a time
    return redirect(_safe_next(request.args.get("next")))


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    """Sign out: this session and every copy of its cookie stop working (the session version moves on)."""
    operator = current_user._get_current_object()
    record("logout", operator)
    end_sessions(operator)
    db.session.commit()
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


PASSWORD_FIELDS = ("current_password", "new_password", "confirm_password")


@bp.route("/password", methods=["GET", "POST"])
@login_required
def change_password():
    if request.method == "POST":
        operator = current_user._get_current_object()
        new = request.form.get("new_password", "")
        try:
            if not verify_password(operator.password_hash, request.form.get("current_password", "")):
                raise ValidationError(_l("The current password is wrong."), {"current_password": "wrong"})
            if new != request.form.get("confirm_password", ""):
                raise ValidationError(_l("The new passwords do not match."), {"confirm_password": "mismatch"})
            try:
                operator.password_hash = hash_password(new)
            except ValidationError as err:
                raise ValidationError(_l("Use at least 8 characters."), {"new_password": "short"}) from err
        except ValidationError as err:
            refused(err, PASSWORD_FIELDS)  # beside its field; passwords are never sent back
            return render_template("auth/password.html"), 400
        operator.password_changed_at = utcnow()
        end_sessions(operator)  # every other session ends; this one goes on under the new version
        record("password.change", operator)
        db.session.commit()
        login_user(operator)
        flash(_("Password changed."), "ok")
        return redirect(url_for("console.dashboard"))
    return render_template("auth/password.html")


@bp.route("/lang/<code>", methods=["POST"])
def set_language(code: str):
    if code in current_app.config["LANGUAGES"]:
        session["lang"] = code
        if current_user.is_authenticated:
            current_user.locale = code
            db.session.commit()
    return redirect(_safe_next(request.form.get("next")))
