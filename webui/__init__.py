"""The web layer: operator console blueprints, templates and static assets."""

from __future__ import annotations

import redis
from flask import Flask, abort, g, render_template, request, session
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from sqlalchemy import select
from sqlalchemy.exc import DataError
from werkzeug.exceptions import BadRequest

from meterhub.db import use_group
from meterhub.extensions import db, login_manager
from meterhub.request_input import data_error_message
from meterhub.tenants.models import Group, Operator
from meterhub.tenants.permissions import ROLE_LABELS
from meterhub.tenants.scoping import has_permission

from . import layout_memo


def _load_operator(user_id: str) -> Operator | None:
    """The session's operator while the session's version is current (sign-out and password change end it)."""
    try:
        group_id, operator_id, version = (int(part) for part in user_id.split(":"))
    except ValueError:
        return None
    use_group(group_id)
    # the group comes in the same statement: every console request reads it (modules, time zone), and it stays
    # in the session once loaded (tenants.models._pin)
    row = db.session.execute(select(Operator, Group).join(Group, Group.id == Operator.group_id)
                             .where(Operator.id == operator_id)).first()
    operator = row[0] if row else None
    if operator is None or not operator.active or operator.session_version != version:
        use_group(None)
        return None
    return operator


def _disabled(operator: Operator) -> set[str]:
    """Modules switched off for the operator's group (a module's key is its blueprint's name), once per request."""
    if "disabled_modules" not in g:
        from meterhub.modules.registry import disabled_modules
        from meterhub.tenants.models import Group

        g.disabled_modules = disabled_modules(db.session.get(Group, operator.group_id))
    return g.disabled_modules


def menu_items(operator: Operator) -> list:
    """The console menu for this operator: the web layer's pages and the plugins' entries it may open (each:
    label, url, section, order, endpoint), see ``webui.nav``."""
    from meterhub.plugins import get_plugin_manager

    from .nav import entries
    from .tariffs import can_view_tariffs

    plugin_items = [item for batch in get_plugin_manager().hook.menu_items(operator=operator) for item in batch or []]
    return entries(operator, plugin_items, _disabled(operator), {"can_view_tariffs": can_view_tariffs})


def register_web(app: Flask) -> None:
    """Blueprints, the user loader, error pages and template helpers."""
    from pathlib import Path

    from meterhub.extensions import babel

    from . import admin, audit, auth, console, devices, i18n, payment_channels, settings, tariffs

    babel.init_app(app, locale_selector=i18n.select_locale, timezone_selector=i18n.select_timezone,
                   default_translation_directories=str(Path(__file__).resolve().parent / "translations"))
    i18n.install_template_gettext(app)
    login_manager.user_loader(_load_operator)
    login_manager.login_view = "auth.login"
    login_manager.login_message = None

    from . import lookup

    for blueprint in (auth.bp, console.bp, devices.bp, admin.bp, audit.bp, settings.bp, payment_channels.bp, tariffs.bp,
                      lookup.bp):
        app.register_blueprint(blueprint)

    from .format import register_filters
    from meterhub.i18n import shown

    from .labels import label

    app.add_template_filter(label, "label")
    app.add_template_filter(shown, "shown")  # stored messages (bill lines, reasons) in the reader's language
    from meterhub.commands.messages import command_error

    app.add_template_filter(command_error, "command_error")  # why a command failed, in the reader's language
    register_filters(app)
    from . import names

    names.register(app)  # {{ alarm.subject_key|subject_name }}: property · building · room · tenant · meter
    from . import links

    links.register(app)  # may_open / page_url / link_to: links only to pages the viewer may open
    layout_memo.register(app)  # the menu and the property switcher, kept a short while per operator
    from . import forms

    forms.register(app)  # choices / options_of: a select's options for the ui.field macro

    @app.before_request
    def _reset_group() -> None:
        use_group(None)

    @app.before_request
    def _head_is_get() -> None:
        """HEAD takes a view's GET branch (the server drops the body), never its POST branch, which a view
        testing ``method == "GET"`` would run for HEAD without the CSRF check."""
        if request.method == "HEAD":
            request.method = "GET"

    @app.before_request
    def _module_switched_off() -> None:
        """A feature module's pages answer 404 for a group that switched the module off (Settings)."""
        if request.blueprint and current_user.is_authenticated and request.blueprint in _disabled(current_user):
            abort(404)

    @app.context_processor
    def _helpers() -> dict:
        def can(permission: str) -> bool:
            return current_user.is_authenticated and has_permission(current_user, permission)

        def properties() -> list:
            if "visible_properties" not in g:
                g.visible_properties = layout_memo.properties(current_user) if current_user.is_authenticated else []
            return g.visible_properties

        def nav_menu() -> list:
            if not current_user.is_authenticated:
                return []
            if "nav_menu" not in g:
                g.nav_menu = layout_memo.menu(current_user, _disabled(current_user), str(get_locale()),
                                              lambda: menu_items(current_user))
            return g.nav_menu

        def nav_sections() -> list:
            from .nav import grouped

            return grouped(nav_menu(), request.endpoint)

        return {
            "get_locale": get_locale,
            "can": can,
            "nav_menu": nav_menu,
            "nav_sections": nav_sections,
            "nav_properties": properties,
            "current_property_id": session.get("property_id"),
            "role_label": lambda role: ROLE_LABELS.get(role, role),
        }

    @app.errorhandler(404)
    def _not_found(_err):  # noqa: ANN001, ANN202
        if request.path.startswith("/api/"):
            return {"error": {"code": "not_found", "message": "Not found.", "fields": {}}}, 404
        return render_template("errors/error.html", code=404, message=_("Not found.")), 404

    @app.errorhandler(405)
    def _method_not_allowed(err):  # noqa: ANN001, ANN202
        if request.path.startswith("/api/"):
            body = {"error": {"code": "method_not_allowed", "message": str(err.description), "fields": {}}}
        else:
            body = render_template("errors/error.html", code=405, message=_("This page does not take that request."))
        return body, 405, {"Allow": ", ".join(err.valid_methods or [])}

    @app.errorhandler(CSRFError)
    def _csrf(err):  # noqa: ANN001, ANN202
        return render_template(
            "errors/error.html", code=400, message=_("The form expired or was not sent from this site. Reload the page and try again.")
        ), 400

    @app.errorhandler(BadRequest)
    def _bad_request(err):  # noqa: ANN001, ANN202
        """Malformed input (a bad page number, a NUL byte, deep JSON): 400 saying what to fix."""
        message = err.description if err.description != BadRequest.description else _("The request is malformed.")
        if request.path.startswith("/api/") or request.is_json:
            return {"error": {"code": "bad_request", "message": message, "fields": {}}}, 400
        return render_template("errors/error.html", code=400, message=message), 400

    @app.errorhandler(DataError)
    def _data_error(err):  # noqa: ANN001, ANN202
        """A value the database refuses (too long, out of range): 400 and nothing stored, never a 500."""
        db.session.rollback()
        message = data_error_message(err)
        if request.path.startswith("/api/") or request.is_json:
            return {"error": {"code": "bad_request", "message": message, "fields": {}}}, 400
        return render_template("errors/error.html", code=400, message=message), 400

    @app.errorhandler(413)
    def _too_large(_err):  # noqa: ANN001, ANN202
        limit = app.config["MAX_CONTENT_LENGTH"]
        size = f"{limit // 2**20} MB" if limit >= 2**20 else f"{limit // 2**10} KB"
        if request.path.startswith("/api/"):
            return {"error": {"code": "too_large", "message": f"The request is larger than {size}.",
                              "fields": {}}}, 413
        return render_template("errors/error.html", code=413,
                               message=_("The upload is larger than %(size)s.", size=size)), 413

    @app.errorhandler(redis.RedisError)
    def _redis_unavailable(_err):  # noqa: ANN001, ANN202
        """Redis unreachable (restarting, down): 503 saying so, never a 500. Sign-in, top-ups and pages that need
        only the database go on (the sign-in throttle counts in PostgreSQL meanwhile); what needs Redis waits."""
        db.session.rollback()
        message = _("A background service (Redis) is not answering, so this action cannot be done now. Try again "
                    "in a minute; payments and top-ups are still taken.")
        headers = {"Retry-After": "30"}
        if request.path.startswith("/api/") or request.is_json:
            return {"error": {"code": "unavailable", "message": message, "fields": {}}}, 503, headers
        return render_template("errors/error.html", code=503, message=message), 503, headers

    @app.errorhandler(403)
    def _forbidden(_err):  # noqa: ANN001, ANN202
        return render_template("errors/error.html", code=403, message=_("You do not have permission for this action.")), 403

    @app.after_request
    def _headers(response):  # noqa: ANN001, ANN202
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.path.startswith("/static/") is False:
            response.headers.setdefault("Cache-Control", "no-store")
        return response
