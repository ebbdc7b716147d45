"""Periodic time-series jobs (registered by the core plugin, run by rq workers as the service role)."""

from __future__ import annotations

from datetime import datetime, timezone

from ..db import service_session
from . import health, rollups


def refresh_rollups_job() -> int:
    """Bring the hourly/daily/monthly usage rollups up to date (plain PostgreSQL; no-op work on TimescaleDB)."""
    with service_session() as session:
        return rollups.run_rollups(session, datetime.now(timezone.utc))


def detect_offline_job() -> int:
    """Mark meters/devices/gateways offline or back online, then tell the plugins."""
    with service_session() as session:
        transitions = health.detect_offline(session, datetime.now(timezone.utc))
    health.notify_health(transitions)
    return len(transitions)
