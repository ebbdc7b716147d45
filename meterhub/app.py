"""The application factory."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from flask import Flask

from . import config as config_module
from .extensions import csrf, db, login_manager

log = logging.getLogger(__name__)


def _secret_key(app: Flask) -> str:
    """A stable secret key kept in the instance folder (created on first start, mode 0600 from the outset)."""
    from .instance_secrets import instance_secret

    return instance_secret(app.instance_path, "secret_key")


def _register_plugins(app: Flask) -> None:
    """Fail fast on broken plugins or clashing drivers; attach plugin blueprints."""
    from .plugins import driver_registry, get_plugin_manager

    pm = get_plugin_manager()
    driver_registry(pm)
    pm.hook.web_app(app=app)  # the web layer (webui.plugin): the core never imports it
    for blueprints in pm.hook.register_blueprints():
        for blueprint in blueprints or []:
            app.register_blueprint(blueprint)
    pm.hook.startup(app=app)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: config layers, extensions, plugins, blueprints."""
    app = Flask(
        "meterhub",
        instance_path=os.environ.get("METERHUB_INSTANCE_PATH") or str(Path.cwd() / "instance"),
        instance_relative_config=True,
        template_folder=str(Path(__file__).resolve().parent.parent / "webui" / "templates"),
        static_folder=str(Path(__file__).resolve().parent.parent / "webui" / "static"),
    )
    from . import request_input

    request_input.init_app(app)
    app.config.from_mapping(config_module.DEFAULTS)
    if test_config is None:
        app.config.from_pyfile("meterhub.cfg", silent=True)
        app.config.from_prefixed_env("METERHUB")
    else:
        app.config.from_mapping(test_config)
    config_module.finish(app.config, app.instance_path)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _secret_key(app)
    proxies = int(app.config.get("TRUSTED_PROXIES") or 0)
    if proxies:  # behind HAProxy/nginx: the client's address (rate limits, audit) from X-Forwarded-For
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)  # type: ignore[method-assign]
    from .tenants.audit import audit_key

    audit_key(app)  # generated on first start, so every process of the instance shares it from the outset

    db.init_app(app)
    from . import replica

    replica.init_app(app)
    csrf.init_app(app)
    login_manager.init_app(app)
    from flask_migrate import Migrate

    Migrate(app, db, directory=str(Path(__file__).parent / "migrations"))
    _register_plugins(app)

    from .cli import register_commands

    register_commands(app)
    return app
