"""The tenant portal as a plugin: its blueprint (sign-in, accounts, payment, members, room QR pay page).

Entry point: ``portal = "meterhub.portal.plugin"`` in the ``meterhub.plugins`` group.
"""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl
from . import models  # noqa: F401  (tables in the metadata)


@hookimpl
def register_blueprints() -> list[Any]:
    from webui.portal import bp

    return [bp]
