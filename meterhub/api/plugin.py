"""The REST API as a plugin: the ``/api/v1`` blueprint, the API-token console page and its menu entry.

Entry point: ``api = "meterhub.api.plugin"`` in the ``meterhub.plugins`` group.
"""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l

from ..hookspecs import hookimpl
from . import models  # noqa: F401  (tables in the metadata)


@hookimpl
def register_blueprints() -> list[Any]:
    from webui.api_tokens import bp as tokens_bp

    from .blueprint import load_views

    return [load_views(), tokens_bp]


@hookimpl
def menu_items(operator: Any) -> list[dict[str, Any]]:
    return [{"label": _l("API tokens"), "endpoint": "api_tokens.index", "permission": "group.manage", "order": 90,
             "section": "settings"}]
