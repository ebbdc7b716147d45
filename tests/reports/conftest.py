"""Report tests share the alarm tests' helpers (tests/alarms/conftest.py)."""
