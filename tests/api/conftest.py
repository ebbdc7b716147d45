"""API fixtures: our plugins registered for the whole session."""

from __future__ import annotations

import pytest

from .world import ensure_plugins


@pytest.fixture(autouse=True, scope="session")
def _our_plugins() -> None:
    ensure_plugins()
