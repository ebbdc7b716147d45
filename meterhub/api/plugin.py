"""The REST API as a plugin: the ``/api/v1`` blueprint and the menu entry of its token page (webui.api_tokens).

Entry point: ``api = "meterhub.api.plugin"`` in the ``meterhub.plugins`` group.
"""

from __future__ import annotations

import functools
from typing import Any

from flask_babel import lazy_gettext as _l

from ..hookspecs import hookimpl
from . import models  # noqa: F401  (tables in the metadata)


@functools.cache
def _api_blueprint() -> Any:
    """The /api/v1 blueprint with every resource module's routes attached (once per process)."""
    from . import views_devices, views_money
    from .blueprint import bp

    for module in (views_devices, views_money):
        module.routes.attach(bp)
    return bp


@hookimpl
def register_blueprints() -> list[Any]:
    return [_api_blueprint()]  # its console page (API tokens) is the web layer's: webui.plugin


@hookimpl
def menu_items(operator: Any) -> list[dict[str, Any]]:
    return [{"label": _l("API tokens"), "endpoint": "api_tokens.index", "permission": "group.manage", "order": 90,
             "section": "settings"}]
