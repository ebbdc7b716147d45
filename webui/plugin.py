"""The web layer as a plugin (entry point ``web = "webui.plugin"``): the console and the tenant portal.

The core builds the app and calls ``web_app``; only here does the web layer come in, so nothing under
``meterhub/`` but a feature module's ``views.py`` imports ``webui`` (tests/test_import_direction.py). The console
pages of core features (alarms, reports, API tokens, the portal) are registered here while their plugin is loaded.
"""

from __future__ import annotations

from typing import Any

from meterhub.hookspecs import hookimpl



@hookimpl(tryfirst=True)
def web_app(app: Any) -> None:
    from meterhub.plugins import get_plugin_manager

    from . import alarms, api_tokens, portal, register_web, reports

    register_web(app)
    # console pages of core features, each while its plugin (entry-point name) is loaded
    feature_pages = {"alarms": alarms.bp, "reports": reports.bp, "api": api_tokens.bp, "portal": portal.bp}
    pm = get_plugin_manager()
    for plugin, blueprint in feature_pages.items():
        if pm.get_plugin(plugin) is not None:
            app.register_blueprint(blueprint)
