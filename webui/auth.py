"""Sign-in, sign-out, password change and language switch."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required, login_user, logout_user
from urllib.parse import urlsplit

from meterhub.db import use_group
from meterhub.errors import RateLimited, ValidationError
from meterhub.extensions import db
from meterhub.models import utcnow
from meterhub.redis_conn import get_redis
from meterhub.tenants.auth import LoginThrottle, burn_time, hash_password, lookup, verify_password
from meterhub.tenants.models import Operator

from .util import client_ip, record

bp = Blueprint("auth", __name__)


def _throttle() -> LoginThrottle:
    cfg = current_app.config
    return LoginThrottle(get_redis(), cfg["LOGIN_MAX_FAILURES"], cfg["LOGIN_WINDOW_SECONDS"], cfg["REDIS_NAMESPACE"])


def _safe_next(target: str | None) -> str:
    if target and urlsplit(target).netloc == "" and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("console.dashboard")


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template("auth/login.html")
    username = request.form.get("username", "").strip().lower()
    password = request.form.get("password", "")
    throttle = _throttle()
    try:
        throttle.check(username, client_ip())
    except RateLimited as err:
        message = _("Too many failed sign-ins. Try again in %(minutes)d minutes or ask your group admin to reset "
                    "your password.", minutes=err.retry_after // 60 + 1)
        return render_template("auth/login.html", error=message, username=username), 429
    target = lookup(db.session, username) if username else None
    operator = None
    if target is not None:
        use_group(target.group_id)
        operator = db.session.get(Operator, target.operator_id)
    if operator is None or not operator.active or not verify_password(operator.password_hash, password):
        if operator is None:
            burn_time(password)
        else:
            record("login.failed", operator, {"username": username}, group_id=operator.group_id,
                   actor=username, operator_id=operator.id)
            db.session.commit()
        throttle.failed(username, client_ip())
        return render_template("auth/login.html", error=_("Wrong username or password."), username=username), 401
    throttle.succeeded(username, client_ip())
    session.clear()
    login_user(operator)
    record("login", operator, group_id=operator.group_id, actor=operator.username, operator_id=operator.id)
    db.session.commit()
    return redirect(_safe_next(request.args.get("next")))


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    record("logout", current_user._get_current_object())
    db.session.commit()
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


@bp.route("/password", methods=["GET", "POST"])
@login_required
def change_password():
    if request.method == "POST":
        operator = current_user._get_current_object()
        new = request.form.get("new_password", "")
        if not verify_password(operator.password_hash, request.form.get("current_password", "")):
            flash(_("The current password is wrong."), "error")
        elif new != request.form.get("confirm_password", ""):
            flash(_("The new passwords do not match."), "error")
        else:
            try:
                operator.password_hash = hash_password(new)
            except ValidationError:
                flash(_("Use at least 8 characters."), "error")
            else:
                operator.password_changed_at = utcnow()
                record("password.change", operator)
                db.session.commit()
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
