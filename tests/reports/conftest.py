"""Report fixtures: plugins registered like in the alarm tests."""

from tests.alarms.conftest import _our_plugins  # noqa: F401  (autouse, session)
