"""The tenant portal as a plugin: its tables. Its pages (sign-in, accounts, payment, members, room QR pay page:
webui.portal) are registered by the web layer (webui.plugin) when this plugin is loaded.

Entry point: ``portal = "meterhub.portal.plugin"`` in the ``meterhub.plugins`` group.
"""

from __future__ import annotations

from . import models  # noqa: F401  (tables in the metadata)
