"""Import the models of enabled feature-module plugins so migrations and queries see them."""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)

# Feature modules whose models live in the core distribution (migrations always create their tables,
# whether or not a group enables the module).
CORE_MODEL_MODULES: tuple[str, ...] = ()


def import_plugin_models() -> None:
    for name in CORE_MODEL_MODULES:
        importlib.import_module(name)
